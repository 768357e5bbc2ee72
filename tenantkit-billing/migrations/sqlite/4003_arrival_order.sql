-- tenantkit-billing (SQLite): the inbox numbers events in the order they arrive, and a
-- subscription's watermark keeps the arrival number of the event it applied. Stripe's
-- `created` has one-second resolution and subscription objects carry no modification time, so
-- events of one second are ordered by arrival (a terminal status still wins its second), no
-- longer by status rank and the random event id.
ALTER TABLE billing_events ADD COLUMN arrival INTEGER;
UPDATE billing_events SET arrival = o.n
    FROM (SELECT event_id, row_number() OVER (ORDER BY received_at, event_id) AS n
          FROM billing_events) AS o
    WHERE o.event_id = billing_events.event_id;
CREATE UNIQUE INDEX billing_events_arrival_idx ON billing_events (arrival);
-- One writer at a time: the next number is the largest so far plus one (events are never
-- deleted, and an explicit column survives VACUUM, unlike the rowid).
CREATE TRIGGER billing_events_arrival AFTER INSERT ON billing_events
    WHEN NEW.arrival IS NULL
BEGIN
    UPDATE billing_events
        SET arrival = (SELECT coalesce(max(arrival), 0) + 1 FROM billing_events)
        WHERE event_id = NEW.event_id;
END;

ALTER TABLE billing_subscriptions ADD COLUMN wm_arrival INTEGER NOT NULL DEFAULT 0;
UPDATE billing_subscriptions SET wm_arrival = coalesce(
    (SELECT arrival FROM billing_events WHERE event_id = billing_subscriptions.wm_event), 0);
