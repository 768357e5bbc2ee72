-- The credentials epoch of its user a session was created under: a session can only be
-- created while the user's epoch is still the one read at the start of the login, and it stops
-- refreshing once the epoch moves on (a password change or reset, "log out everywhere").
ALTER TABLE sessions ADD COLUMN credentials_epoch bigint NOT NULL DEFAULT 0;
