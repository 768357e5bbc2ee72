-- Append-only security audit log, hash-chained per tenant: each row's hash covers its own
-- fields and the previous row's hash, so an edited, deleted or reordered row breaks the chain.
CREATE TABLE audit_log (
    id           BLOB PRIMARY KEY NOT NULL,
    tenant_id    BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
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
    UNIQUE (tenant_id, seq)
);
