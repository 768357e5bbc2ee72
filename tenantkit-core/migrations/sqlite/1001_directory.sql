-- tenantkit-core: the directory (SQLite): tenants, users, memberships.
-- Split from wave-1 migration 1 (which also held the example domain), unchanged. Ids are UUIDs stored as 16-byte BLOBs, whose byte
-- order is UUIDv7 creation order; times are RFC 3339 text.

CREATE TABLE tenants (
    id          BLOB PRIMARY KEY NOT NULL,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    plan        TEXT NOT NULL DEFAULT 'free',
    created_at  TEXT NOT NULL
);

CREATE TABLE users (
    id                 BLOB PRIMARY KEY NOT NULL,
    email              TEXT NOT NULL,
    password_hash      TEXT,
    email_verified_at  TEXT,
    created_at         TEXT NOT NULL
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE memberships (
    tenant_id   BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id     BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    created_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX memberships_user_idx ON memberships (user_id);
