-- Invitations the operator sends (`user create` for an address that has no verified account):
-- they carry no inviting member whose rights must still hold when they are accepted.
ALTER TABLE invitations ADD COLUMN by_operator INTEGER NOT NULL DEFAULT 0 CHECK (by_operator IN (0, 1));
