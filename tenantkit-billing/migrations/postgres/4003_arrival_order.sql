-- tenantkit-billing (PostgreSQL): the inbox numbers events in the order they arrive, and a
-- subscription's watermark keeps the arrival number of the event it applied. Stripe's
-- `created` has one-second resolution and subscription objects carry no modification time, so
-- events of one second are ordered by arrival (a terminal status still wins its second), no
-- longer by status rank and the random event id.
SELECT set_config('app.system', 'on', true);
CREATE SEQUENCE billing_events_arrival_seq AS bigint;
ALTER TABLE billing_events ADD COLUMN arrival bigint;
UPDATE billing_events e SET arrival = o.n
    FROM (SELECT event_id, row_number() OVER (ORDER BY received_at, event_id) AS n
          FROM billing_events) o
    WHERE e.event_id = o.event_id;
SELECT setval('billing_events_arrival_seq',
              coalesce((SELECT max(arrival) FROM billing_events), 0) + 1, false);
ALTER TABLE billing_events
    ALTER COLUMN arrival SET DEFAULT nextval('billing_events_arrival_seq'),
    ALTER COLUMN arrival SET NOT NULL;
ALTER SEQUENCE billing_events_arrival_seq OWNED BY billing_events.arrival;
GRANT USAGE ON SEQUENCE billing_events_arrival_seq TO tenantkit_app;

ALTER TABLE billing_subscriptions ADD COLUMN wm_arrival bigint NOT NULL DEFAULT 0;
UPDATE billing_subscriptions s SET wm_arrival = e.arrival
    FROM billing_events e WHERE e.event_id = s.wm_event;
