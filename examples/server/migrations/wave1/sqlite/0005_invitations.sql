-- Invitations to join a tenant, redeemed by a single-use token stored as SHA-256. Global
-- table: accepting looks the token up before the tenant is known.
CREATE TABLE invitations (
    id           BLOB PRIMARY KEY NOT NULL,
    tenant_id    BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email        TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    token_hash   BLOB NOT NULL UNIQUE,
    invited_by   BLOB REFERENCES users (id) ON DELETE SET NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    accepted_at  TEXT
);
CREATE INDEX invitations_tenant_idx ON invitations (tenant_id, id);
