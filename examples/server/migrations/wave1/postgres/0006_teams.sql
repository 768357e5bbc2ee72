-- Teams group members inside a tenant. A project may belong to a team; a restricted project
-- is visible only to its team's members and to admins/owners.
CREATE TABLE teams (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         text NOT NULL,
    description  text,
    version      bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    UNIQUE (tenant_id, id)
);
CREATE UNIQUE INDEX teams_name_idx ON teams (tenant_id, lower(name));

-- Only members of the team's own tenant can join it: both keys are composite with the
-- tenant, so a row can never pair a team with another tenant's member. Removing a member
-- from the tenant removes them from its teams.
CREATE TABLE team_members (
    tenant_id  uuid NOT NULL,
    team_id    uuid NOT NULL,
    user_id    uuid NOT NULL,
    added_at   timestamptz NOT NULL,
    PRIMARY KEY (team_id, user_id),
    FOREIGN KEY (tenant_id, team_id) REFERENCES teams (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, user_id) REFERENCES memberships (tenant_id, user_id) ON DELETE CASCADE
);
CREATE INDEX team_members_user_idx ON team_members (tenant_id, user_id);

-- A project's team is always of the project's tenant (composite key). Deleting a team
-- detaches its projects first (the repository does it in the same transaction).
ALTER TABLE projects ADD COLUMN team_id uuid;
ALTER TABLE projects ADD COLUMN restricted boolean NOT NULL DEFAULT false;
ALTER TABLE projects ADD FOREIGN KEY (tenant_id, team_id) REFERENCES teams (tenant_id, id);
CREATE INDEX projects_team_idx ON projects (tenant_id, team_id);

ALTER TABLE teams ENABLE ROW LEVEL SECURITY;
ALTER TABLE teams FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON teams
    USING (tenant_id = tenantkit_current_tenant())
    WITH CHECK (tenant_id = tenantkit_current_tenant());

ALTER TABLE team_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE team_members FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON team_members
    USING (tenant_id = tenantkit_current_tenant())
    WITH CHECK (tenant_id = tenantkit_current_tenant());

GRANT SELECT, INSERT, UPDATE, DELETE ON teams, team_members TO tenantkit_app;
