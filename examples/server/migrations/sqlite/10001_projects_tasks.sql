-- The example domain (SQLite): projects and the tasks inside them, tenant-owned.
-- Split from wave-1 migration 1, unchanged.

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
