-- A user's credentials epoch: changed by a password change or reset and by "log out
-- everywhere". A session is stamped with the epoch it was created under; one created after the
-- epoch moved on (a login that was in flight during a reset) is refused.
ALTER TABLE users ADD COLUMN credentials_epoch INTEGER NOT NULL DEFAULT 0;
