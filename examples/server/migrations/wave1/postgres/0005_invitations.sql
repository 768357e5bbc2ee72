-- Invitations to join a tenant, redeemed by a single-use token stored as SHA-256. Global
-- table: accepting looks the token up before the tenant is known.
CREATE TABLE invitations (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email        text NOT NULL,
    role         text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    token_hash   bytea NOT NULL UNIQUE,
    invited_by   uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    accepted_at  timestamptz
);
CREATE INDEX invitations_tenant_idx ON invitations (tenant_id, id);

GRANT SELECT, INSERT, UPDATE, DELETE ON invitations TO tenantkit_app;
