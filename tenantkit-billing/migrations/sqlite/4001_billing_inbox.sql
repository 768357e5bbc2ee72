-- tenantkit-billing (SQLite): the durable inbox of Stripe events, keyed by event id.
CREATE TABLE billing_events (
    event_id      TEXT PRIMARY KEY NOT NULL,
    event_type    TEXT NOT NULL,
    created       INTEGER NOT NULL,
    livemode      INTEGER NOT NULL DEFAULT 0,
    payload       TEXT NOT NULL,
    state         TEXT NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'processing', 'done', 'dead')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    lease_until   TEXT,
    last_error    TEXT,
    received_at   TEXT NOT NULL,
    processed_at  TEXT
);
CREATE INDEX billing_events_due_idx ON billing_events (state, next_attempt_at);
