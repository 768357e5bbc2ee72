-- The audit log outlives its tenant: deleting a tenant that has entries is refused (RESTRICT,
-- not CASCADE), so a tenant deletion can never wipe its history. Each entry may carry an anchor,
-- an HMAC of its position and hash under a key the database does not hold, so `audit verify`
-- detects a chain rewritten from scratch. SQLite cannot change a foreign key in place: the
-- table is rebuilt with its rows.
CREATE TABLE audit_log_rebuilt (
    id           BLOB PRIMARY KEY NOT NULL,
    tenant_id    BLOB NOT NULL REFERENCES tenants (id) ON DELETE RESTRICT,
    seq          INTEGER NOT NULL CHECK (seq >= 1),
    at           TEXT NOT NULL,
    actor_id     BLOB,
    action       TEXT NOT NULL,
    target_type  TEXT,
    target_id    TEXT,
    ip           TEXT,
    user_agent   TEXT,
    details      TEXT NOT NULL,
    prev_hash    BLOB NOT NULL,
    hash         BLOB NOT NULL,
    anchor       BLOB,
    UNIQUE (tenant_id, seq)
);
INSERT INTO audit_log_rebuilt (id, tenant_id, seq, at, actor_id, action, target_type, target_id,
                               ip, user_agent, details, prev_hash, hash)
    SELECT id, tenant_id, seq, at, actor_id, action, target_type, target_id, ip, user_agent,
           details, prev_hash, hash
    FROM audit_log;
DROP TABLE audit_log;
ALTER TABLE audit_log_rebuilt RENAME TO audit_log;
