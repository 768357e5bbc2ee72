-- A tenant table of an application outside tenantkit-core (used by core's tests): notes that
-- may be restricted to a team, and comments that share their note's visibility.
CREATE TABLE notes (
    id          BLOB PRIMARY KEY NOT NULL,
    tenant_id   BLOB NOT NULL REFERENCES tenants (id),
    team_id     BLOB,
    restricted  INTEGER NOT NULL DEFAULT 0 CHECK (restricted IN (0, 1)),
    body        TEXT NOT NULL,
    version     INTEGER NOT NULL DEFAULT 1,
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, team_id) REFERENCES teams (tenant_id, id)
);

CREATE TABLE note_comments (
    id          BLOB PRIMARY KEY NOT NULL,
    tenant_id   BLOB NOT NULL REFERENCES tenants (id),
    note_id     BLOB NOT NULL,
    body        TEXT NOT NULL,
    version     INTEGER NOT NULL DEFAULT 1,
    FOREIGN KEY (tenant_id, note_id) REFERENCES notes (tenant_id, id) ON DELETE CASCADE
);
