-- The audit log outlives its tenant: deleting a tenant that has entries is refused (RESTRICT,
-- not CASCADE, which ran as the owner and let the application role wipe a chain by deleting its
-- tenant). Each entry may carry an anchor, an HMAC of its position and hash under a key the
-- database does not hold, so `audit verify` detects a chain rewritten from scratch.
ALTER TABLE audit_log ADD COLUMN anchor bytea;
ALTER TABLE audit_log DROP CONSTRAINT audit_log_tenant_id_fkey;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_tenant_id_fkey
    FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE RESTRICT;
