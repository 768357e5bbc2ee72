-- The notes app's own tables (SQLite), in the application's version range (10000 and up).
-- Tenant tables carry tenant_id; on SQLite every query filters by it (there is no RLS).
CREATE TABLE notes (
    id          BLOB PRIMARY KEY NOT NULL,
    tenant_id   BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    author      BLOB NOT NULL REFERENCES users (id),
    body        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (tenant_id, id)
);

-- The plan of each tenant's notes, written by the Stripe webhook handler.
CREATE TABLE note_plans (
    tenant_id   BLOB PRIMARY KEY NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    plan        TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
