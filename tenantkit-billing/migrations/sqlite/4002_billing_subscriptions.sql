-- tenantkit-billing (SQLite): a tenant's Stripe customer and its subscriptions' latest state,
-- with the watermark of the newest event applied.
CREATE TABLE billing_customers (
    tenant_id     BLOB PRIMARY KEY NOT NULL REFERENCES tenants (id),
    customer_id   TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL
);
CREATE TABLE billing_subscriptions (
    subscription_id   TEXT PRIMARY KEY NOT NULL,
    tenant_id         BLOB NOT NULL REFERENCES tenants (id),
    customer_id       TEXT NOT NULL,
    status            TEXT NOT NULL,
    price_id          TEXT,
    current_period_end INTEGER,
    cancel_at_period_end INTEGER NOT NULL DEFAULT 0,
    wm_created        INTEGER NOT NULL,
    wm_rank           INTEGER NOT NULL,
    wm_event          TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX billing_subscriptions_tenant_idx ON billing_subscriptions (tenant_id);
