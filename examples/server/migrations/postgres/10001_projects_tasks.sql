-- The example domain (PostgreSQL): projects and the tasks inside them, tenant-owned, behind
-- row-level security. Split from wave-1 migration 1; statements unchanged.

CREATE TABLE projects (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         text NOT NULL,
    description  text,
    version      bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    UNIQUE (tenant_id, id)
);

CREATE TABLE tasks (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    project_id   uuid NOT NULL,
    title        text NOT NULL,
    description  text,
    status       text NOT NULL DEFAULT 'todo' CHECK (status IN ('todo', 'in_progress', 'done')),
    assignee_id  uuid REFERENCES users (id) ON DELETE SET NULL,
    due_at       timestamptz,
    version      bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX tasks_project_idx ON tasks (tenant_id, project_id, id);
CREATE INDEX tasks_assignee_idx ON tasks (tenant_id, assignee_id, id);

-- Row-level security on every tenant table. FORCE applies it to the owner too.
ALTER TABLE projects ENABLE ROW LEVEL SECURITY;
ALTER TABLE projects FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON projects
    USING (tenant_id = tenantkit_current_tenant())
    WITH CHECK (tenant_id = tenantkit_current_tenant());

ALTER TABLE tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE tasks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tasks
    USING (tenant_id = tenantkit_current_tenant())
    WITH CHECK (tenant_id = tenantkit_current_tenant());

GRANT SELECT, INSERT, UPDATE, DELETE ON projects, tasks TO tenantkit_app;
