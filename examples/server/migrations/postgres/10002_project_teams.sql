-- Projects may belong to a team and be restricted to it (split from wave-1 migration 6).
-- A project's team is always of the project's tenant (composite key). Deleting a team
-- detaches its projects first (the repository does it in the same transaction).
ALTER TABLE projects ADD COLUMN team_id uuid;
ALTER TABLE projects ADD COLUMN restricted boolean NOT NULL DEFAULT false;
ALTER TABLE projects ADD FOREIGN KEY (tenant_id, team_id) REFERENCES teams (tenant_id, id);
CREATE INDEX projects_team_idx ON projects (tenant_id, team_id);
