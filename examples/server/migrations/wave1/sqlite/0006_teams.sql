-- Teams group members inside a tenant. A project may belong to a team; a restricted project
-- is visible only to its team's members and to admins/owners.
CREATE TABLE teams (
    id           BLOB PRIMARY KEY NOT NULL,
    tenant_id    BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    description  TEXT,
    version      INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    UNIQUE (tenant_id, id)
);
CREATE UNIQUE INDEX teams_name_idx ON teams (tenant_id, lower(name));

-- Only members of the team's own tenant can join it: both keys are composite with the
-- tenant, so a row can never pair a team with another tenant's member. Removing a member
-- from the tenant removes them from its teams.
CREATE TABLE team_members (
    tenant_id  BLOB NOT NULL,
    team_id    BLOB NOT NULL,
    user_id    BLOB NOT NULL,
    added_at   TEXT NOT NULL,
    PRIMARY KEY (team_id, user_id),
    FOREIGN KEY (tenant_id, team_id) REFERENCES teams (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, user_id) REFERENCES memberships (tenant_id, user_id) ON DELETE CASCADE
);
CREATE INDEX team_members_user_idx ON team_members (tenant_id, user_id);

-- SQLite cannot add a composite foreign key to an existing table; the repository checks
-- that the team is the project's tenant's, and deleting a team detaches its projects first.
ALTER TABLE projects ADD COLUMN team_id BLOB REFERENCES teams (id);
ALTER TABLE projects ADD COLUMN restricted INTEGER NOT NULL DEFAULT 0 CHECK (restricted IN (0, 1));
CREATE INDEX projects_team_idx ON projects (tenant_id, team_id);
