-- Tenants are deleted softly (members removed, sessions ended, the row and its audit chain
-- kept), by an explicit, audited operation.
ALTER TABLE tenants ADD COLUMN deleted_at TEXT;
