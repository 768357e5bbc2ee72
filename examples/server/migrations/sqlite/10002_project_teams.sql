-- Projects may belong to a team and be restricted to it (split from wave-1 migration 6).
-- SQLite cannot add a composite foreign key to an existing table; the repository checks
-- that the team is the project's tenant's, and deleting a team detaches its projects first.
ALTER TABLE projects ADD COLUMN team_id BLOB REFERENCES teams (id);
ALTER TABLE projects ADD COLUMN restricted INTEGER NOT NULL DEFAULT 0 CHECK (restricted IN (0, 1));
CREATE INDEX projects_team_idx ON projects (tenant_id, team_id);
