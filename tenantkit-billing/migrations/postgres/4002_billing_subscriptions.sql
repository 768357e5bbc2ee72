-- tenantkit-billing (PostgreSQL): which Stripe customer is a tenant's (at most one each), and
-- each subscription's latest state with its watermark (the newest event applied), so a stale
-- event never overwrites newer state. Tenant rows behind RLS; the worker reaches them in
-- system transactions.
CREATE TABLE billing_customers (
    tenant_id     uuid PRIMARY KEY REFERENCES tenants (id),
    customer_id   text NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL
);
CREATE TABLE billing_subscriptions (
    subscription_id   text PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants (id),
    customer_id       text NOT NULL,
    status            text NOT NULL,
    price_id          text,
    current_period_end bigint,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    wm_created        bigint NOT NULL,
    wm_rank           integer NOT NULL,
    wm_event          text NOT NULL,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX billing_subscriptions_tenant_idx ON billing_subscriptions (tenant_id);
SELECT tenantkit_enable_tenant_rls('billing_customers');
SELECT tenantkit_allow_system_access('billing_customers');
SELECT tenantkit_enable_tenant_rls('billing_subscriptions');
SELECT tenantkit_allow_system_access('billing_subscriptions');
GRANT SELECT, INSERT, UPDATE ON billing_customers, billing_subscriptions TO tenantkit_app;
