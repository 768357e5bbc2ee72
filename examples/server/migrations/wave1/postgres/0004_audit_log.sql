-- Append-only security audit log, hash-chained per tenant: each row's hash covers its own
-- fields and the previous row's hash, so an edited, deleted or reordered row breaks the chain.
CREATE TABLE audit_log (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    seq          bigint NOT NULL CHECK (seq >= 1),
    at           timestamptz NOT NULL,
    actor_id     uuid,
    action       text NOT NULL,
    target_type  text,
    target_id    text,
    ip           text,
    user_agent   text,
    details      text NOT NULL,
    prev_hash    bytea NOT NULL,
    hash         bytea NOT NULL,
    UNIQUE (tenant_id, seq)
);

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_log
    USING (tenant_id = tenantkit_current_tenant())
    WITH CHECK (tenant_id = tenantkit_current_tenant());

-- Append-only for the application: no UPDATE, no DELETE.
GRANT SELECT, INSERT ON audit_log TO tenantkit_app;
-- Appends lock their tenant's row to serialize the chain.
GRANT SELECT, UPDATE ON tenants TO tenantkit_app;
