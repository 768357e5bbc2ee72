-- The PostgreSQL backplane (PgBackplane): one counter per channel and the recent events of
-- every channel, bodies included (LISTEN/NOTIFY carries only ids). Infrastructure shared by
-- every instance and read by the listener for all tenants at once, so not under row-level
-- security; only the backplane reads it, after the channel's tenant was checked.
CREATE TABLE realtime_channels (
    tenant_id   uuid NOT NULL,
    name        text NOT NULL,
    seq         bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE realtime_events (
    id              bigserial PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    name            text NOT NULL,
    seq             bigint NOT NULL,
    event           text NOT NULL,
    data            text NOT NULL,
    access_changed  boolean NOT NULL,
    origin          bigint,
    at              timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name, seq)
);
-- A republished outbox message is found by its origin (and cannot be stored twice).
CREATE UNIQUE INDEX realtime_events_origin_idx ON realtime_events (tenant_id, name, origin)
    WHERE origin IS NOT NULL;
CREATE INDEX realtime_events_at_idx ON realtime_events (at);

GRANT SELECT, INSERT, UPDATE, DELETE ON realtime_channels TO tenantkit_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON realtime_events TO tenantkit_app;
GRANT USAGE, SELECT ON SEQUENCE realtime_events_id_seq TO tenantkit_app;
