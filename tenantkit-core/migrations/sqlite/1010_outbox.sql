-- The transactional outbox: messages written in the same transaction as the change they
-- announce, relayed after the commit, at least once (see tenantkit_core::outbox). A message
-- of a tenant carries its tenant_id; a system message has none. Timestamps are fixed-width
-- UTC text (six fractional digits), so that comparing them as text compares them in time.
CREATE TABLE outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id     BLOB REFERENCES tenants (id) ON DELETE CASCADE,
    topic         TEXT NOT NULL CHECK (length(topic) BETWEEN 1 AND 200),
    payload       TEXT NOT NULL CHECK (json_valid(payload)),
    created_at    TEXT NOT NULL,
    -- When the message may be claimed: its creation, then the end of each claim's lease.
    available_at  TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    delivered_at  TEXT
);
-- The claim: undelivered messages of one topic, oldest id first.
CREATE INDEX outbox_pending_idx ON outbox (topic, id) WHERE delivered_at IS NULL;
-- The prune: delivered messages by age.
CREATE INDEX outbox_delivered_idx ON outbox (delivered_at) WHERE delivered_at IS NOT NULL;
