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
-- The worker takes the oldest open event: this index hands it over without sorting the
-- backlog (the claim repeats the index's condition so the planner can use it).
CREATE INDEX billing_events_open_idx ON billing_events (created, event_id)
    WHERE state IN ('pending', 'processing');
CREATE INDEX billing_events_received_idx ON billing_events (received_at);
