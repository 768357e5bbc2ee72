-- The notes app's own tables (PostgreSQL), in the application's version range (10000 and up),
-- behind row-level security: a transaction sees only the rows of the tenant in
-- `app.tenant_id`, which tenantkit sets for every tenant transaction.
CREATE TABLE notes (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    author      uuid NOT NULL REFERENCES users (id),
    body        text NOT NULL,
    created_at  timestamptz NOT NULL,
    UNIQUE (tenant_id, id)
);

-- Spelled out for `notes`: ENABLE and FORCE (the owner is bound too), the tenant policy
-- (`tenantkit_current_tenant()` is `current_setting('app.tenant_id')` as a uuid; the start-up
-- check looks for it), and the registration that makes tenantkit's start-up check refuse to
-- run should any of this ever be lost.
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE notes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON notes
    USING (tenant_id = tenantkit_current_tenant())
    WITH CHECK (tenant_id = tenantkit_current_tenant());
SELECT tenantkit_register_tenant_table('notes');

-- The plan of each tenant's notes, written by the Stripe webhook handler; the same four
-- steps in one call.
CREATE TABLE note_plans (
    tenant_id   uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    plan        text NOT NULL,
    updated_at  timestamptz NOT NULL
);
SELECT tenantkit_enable_tenant_rls('note_plans');

GRANT SELECT, INSERT, UPDATE, DELETE ON notes, note_plans TO tenantkit_app;
