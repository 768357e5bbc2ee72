-- Single-use WebSocket tickets (30 s), stored as SHA-256; the caller they stand for. Looked up
-- by the secret's hash before the tenant is known, so not under row-level security (like
-- user_tokens).
CREATE TABLE realtime_tickets (
    ticket_hash       bytea PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id           uuid NOT NULL,
    session_id        uuid NOT NULL,
    role              text NOT NULL,
    scopes            text NOT NULL,
    amr               text NOT NULL,
    token_expires_ms  bigint,
    expires_ms        bigint NOT NULL
);
CREATE INDEX realtime_tickets_expiry_idx ON realtime_tickets (expires_ms);

GRANT SELECT, INSERT, UPDATE, DELETE ON realtime_tickets TO tenantkit_app;
