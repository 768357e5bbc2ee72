-- A tenant table of an application outside tenantkit-core (used by core's tests): notes that
-- may be restricted to a team, and comments that share their note's visibility. Both behind
-- row-level security with core's helper.
CREATE TABLE notes (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    team_id     uuid,
    restricted  boolean NOT NULL DEFAULT false,
    body        text NOT NULL,
    version     bigint NOT NULL DEFAULT 1,
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, team_id) REFERENCES teams (tenant_id, id)
);

CREATE TABLE note_comments (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    note_id     uuid NOT NULL,
    body        text NOT NULL,
    version     bigint NOT NULL DEFAULT 1,
    FOREIGN KEY (tenant_id, note_id) REFERENCES notes (tenant_id, id) ON DELETE CASCADE
);

SELECT tenantkit_enable_tenant_rls('notes');
SELECT tenantkit_enable_tenant_rls('note_comments');
GRANT SELECT, INSERT, UPDATE, DELETE ON notes, note_comments TO tenantkit_app;
