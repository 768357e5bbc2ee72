-- Single-use WebSocket tickets (30 s), stored as SHA-256; the caller they stand for.
CREATE TABLE realtime_tickets (
    ticket_hash       BLOB PRIMARY KEY NOT NULL,
    tenant_id         BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id           BLOB NOT NULL,
    session_id        BLOB NOT NULL,
    role              TEXT NOT NULL,
    scopes            TEXT NOT NULL,
    amr               TEXT NOT NULL,
    token_expires_ms  INTEGER,
    expires_ms        INTEGER NOT NULL
);
CREATE INDEX realtime_tickets_expiry_idx ON realtime_tickets (expires_ms);
