-- tenantkit foundation schema (SQLite). Ids are UUIDs stored as 16-byte BLOBs, whose byte
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

CREATE TABLE projects (
    id           BLOB PRIMARY KEY NOT NULL,
    tenant_id    BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    description  TEXT,
    version      INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    -- Keyset pages are (tenant_id, id) range scans; also the target of tasks' composite key.
    UNIQUE (tenant_id, id)
);

CREATE TABLE tasks (
    id           BLOB PRIMARY KEY NOT NULL,
    tenant_id    BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    project_id   BLOB NOT NULL,
    title        TEXT NOT NULL,
    description  TEXT,
    status       TEXT NOT NULL DEFAULT 'todo' CHECK (status IN ('todo', 'in_progress', 'done')),
    assignee_id  BLOB REFERENCES users (id) ON DELETE SET NULL,
    due_at       TEXT,
    version      INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    UNIQUE (tenant_id, id),
    -- A task can only point at a project of its own tenant.
    FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX tasks_project_idx ON tasks (tenant_id, project_id, id);
CREATE INDEX tasks_assignee_idx ON tasks (tenant_id, assignee_id, id);
