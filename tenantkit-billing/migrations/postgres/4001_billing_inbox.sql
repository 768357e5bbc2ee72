-- tenantkit-billing (PostgreSQL): the durable inbox of Stripe events, keyed by event id. Events
-- arrive before their tenant is known, so the inbox is a global table, reached only by
-- system transactions.
CREATE TABLE billing_events (
    event_id      text PRIMARY KEY,
    event_type    text NOT NULL,
    created       bigint NOT NULL,
    livemode      boolean NOT NULL DEFAULT false,
    payload       jsonb NOT NULL,
    state         text NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'processing', 'done', 'dead')),
    attempts      integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    lease_until   timestamptz,
    last_error    text,
    received_at   timestamptz NOT NULL,
    processed_at  timestamptz
);
-- The worker takes the oldest open event: this index hands it over without sorting the
-- backlog (the claim repeats the index's condition so the planner can use it).
CREATE INDEX billing_events_open_idx ON billing_events (created, event_id)
    WHERE state IN ('pending', 'processing');
CREATE INDEX billing_events_received_idx ON billing_events (received_at);
GRANT SELECT, INSERT, UPDATE ON billing_events TO tenantkit_app;
