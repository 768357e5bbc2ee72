//! Subscription state from Stripe events, guarded against stale and out-of-order deliveries,
//! and the tenant's plan and entitlements derived from it.
//!
//! Each subscription row keeps a watermark: the key of the newest event applied. An event is
//! applied only when its own key is greater, in one conditional upsert, so duplicates,
//! redeliveries and reordering converge to the state of the newest event, whatever order the
//! worker handles them in. The key is what Stripe gives, then what the inbox saw:
//!
//! 1. the event's `created` (Stripe's clock; a subscription object carries no modification
//!    time of its own, so this is the finest order Stripe states);
//! 2. within one second, a terminal status ([`TERMINAL_STATUSES`]) wins: nothing follows the
//!    end of a subscription, so a deletion beats an update of the same second however they
//!    arrive;
//! 3. otherwise the inbox's arrival order ([`crate::StoredEvent::arrival`]): of two events of
//!    the same second, the one that arrived later wins (`paused` then `active` in one second
//!    ends `active`; delivered the other way round, it ends `paused`). Stripe states nothing
//!    finer than the second, so the order in which its deliveries arrived is the best
//!    evidence left.
//!
//! An event whose tenant is not known yet (a subscription event before its checkout session,
//! without `metadata.tenant_id`) fails and is retried by the worker until the mapping exists;
//! its retries keep its place in the arrival order.

use std::sync::{Arc, LazyLock};

use std::collections::HashMap;

use serde::Serialize;
use stripe_shared::{CheckoutSession, Subscription};
use time::OffsetDateTime;

use tenantkit_core::{AuditEvent, PlanName, SystemTx, TenantId, TenantTx, with_conn};

use crate::HandlerError;
use crate::inbox::StoredEvent;
use crate::plans::Plans;
use crate::typed::ObjectHandler;
use crate::worker::{BoxFuture, EventRouter};

/// The event types [`SubscriptionHandler`] applies.
pub const SUBSCRIPTION_EVENTS: &[&str] = &[
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.subscription.trial_will_end",
];

/// Where a status stands in a subscription's life (recorded with each watermark, for
/// inspection; the order of events comes from their timestamps and arrival, see the module
/// documentation).
pub fn status_rank(status: &str) -> i32 {
    match status {
        "incomplete" => 0,
        "trialing" => 1,
        "active" => 2,
        "paused" => 3,
        "past_due" => 4,
        "unpaid" => 5,
        "canceled" | "incomplete_expired" => 6,
        _ => 0,
    }
}

/// The statuses after which a subscription has no life left: within one second, an event in
/// one of them wins over any other.
pub const TERMINAL_STATUSES: &[&str] = &["canceled", "incomplete_expired"];

/// SQL that is 1 when `column` holds a terminal status, else 0.
fn terminal(column: &str) -> String {
    let list = TERMINAL_STATUSES
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("(CASE WHEN {column} IN ({list}) THEN 1 ELSE 0 END)")
}

/// Moves a subscription's row only when the event's key `(created, terminal status,
/// arrival)` is greater than the row's watermark (see the module documentation).
static UPSERT_SUBSCRIPTION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO billing_subscriptions (subscription_id, tenant_id, customer_id, \
         status, price_id, current_period_end, cancel_at_period_end, wm_created, wm_rank, \
         wm_event, wm_arrival, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (subscription_id) DO UPDATE SET status = excluded.status, \
         price_id = excluded.price_id, current_period_end = excluded.current_period_end, \
         cancel_at_period_end = excluded.cancel_at_period_end, \
         wm_created = excluded.wm_created, wm_rank = excluded.wm_rank, \
         wm_event = excluded.wm_event, wm_arrival = excluded.wm_arrival, \
         updated_at = excluded.updated_at \
         WHERE billing_subscriptions.tenant_id = excluded.tenant_id AND \
         (excluded.wm_created, {}, excluded.wm_arrival) > \
         (billing_subscriptions.wm_created, {}, billing_subscriptions.wm_arrival)",
        terminal("excluded.status"),
        terminal("billing_subscriptions.status"),
    )
});

/// Applies checkout and subscription events, then sets the tenant's plan (audited when it
/// changes).
#[derive(Debug, Clone)]
pub struct SubscriptionHandler {
    plans: Arc<Plans>,
}

impl SubscriptionHandler {
    /// A handler deriving plans from `plans`.
    pub fn new(plans: Arc<Plans>) -> Self {
        Self { plans }
    }

    /// A router with this handler on every [`SUBSCRIPTION_EVENTS`] type: checkout sessions
    /// parsed as async-stripe's [`CheckoutSession`], the rest as its [`Subscription`].
    pub fn router(plans: Arc<Plans>) -> EventRouter {
        let handler = Arc::new(Self::new(plans));
        SUBSCRIPTION_EVENTS
            .iter()
            .fold(EventRouter::new(), |router, kind| {
                if *kind == "checkout.session.completed" {
                    router.on_object::<CheckoutSession, _>(kind, handler.clone())
                } else {
                    router.on_object::<Subscription, _>(kind, handler.clone())
                }
            })
    }
}

/// `metadata.tenant_id`, when set.
fn metadata_tenant(metadata: Option<&HashMap<String, String>>) -> Option<&str> {
    metadata
        .and_then(|m| m.get("tenant_id"))
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// A tenant id from event data: only ever from the signed event, checked to exist.
async fn existing_tenant(
    tx: &mut SystemTx,
    text: Option<&str>,
) -> Result<Option<TenantId>, HandlerError> {
    let Some(id) = text.and_then(|t| t.parse::<TenantId>().ok()) else {
        return Ok(None);
    };
    // Core owns the tenants table: ask it.
    let found = tx.find_tenant(id).await?;
    Ok(found.map(|tenant| tenant.id))
}

/// The tenant whose Stripe customer `customer` (`cus_…`) is, once the checkout session (or
/// a subscription's `metadata.tenant_id`) that names it was handled by
/// [`SubscriptionHandler`]: for handlers of other events (invoices, charges) that must find
/// their tenant, then act in it with [`SystemTx::in_tenant`]. `None` while it is not known
/// (fail the handler to retry it later).
///
/// # Errors
/// [`tenantkit_core::Error::Database`] on failure.
pub async fn tenant_of_customer(
    tx: &mut SystemTx,
    customer: &str,
) -> tenantkit_core::Result<Option<TenantId>> {
    Ok(with_conn!(tx, |c| {
        sqlx::query_scalar("SELECT tenant_id FROM billing_customers WHERE customer_id = $1")
            .bind(customer)
            .fetch_optional(c)
            .await
    })?)
}

/// Maps `customer` to `tenant` unless either already has another mapping (a tenant has at
/// most one customer; a customer belongs to one tenant).
async fn map_customer(
    tx: &mut SystemTx,
    tenant: TenantId,
    customer: &str,
) -> Result<(), HandlerError> {
    let now = tenantkit_core::now();
    // PostgreSQL: the row is the tenant's, so act in it for the insert.
    with_conn!(tx, |c| {
        sqlx::query(
            "INSERT INTO billing_customers (tenant_id, customer_id, created_at) \
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(customer)
        .bind(now)
        .execute(c)
        .await
        .map(drop)
    })?;
    Ok(())
}

impl SubscriptionHandler {
    /// A checkout session maps its customer to the tenant it names.
    async fn checkout(
        &self,
        tx: &mut SystemTx,
        session: &CheckoutSession,
    ) -> Result<(), HandlerError> {
        let tenant = match existing_tenant(tx, session.client_reference_id.as_deref()).await? {
            Some(tenant) => Some(tenant),
            None => existing_tenant(tx, metadata_tenant(session.metadata.as_ref())).await?,
        };
        if let (Some(tenant), Some(customer)) = (tenant, &session.customer) {
            map_customer(tx, tenant, customer.id().as_str()).await?;
        }
        Ok(())
    }

    /// A subscription event moves the subscription's row (if it is newer than the row's
    /// watermark), then settles the tenant's plan.
    async fn subscription(
        &self,
        tx: &mut SystemTx,
        event: &StoredEvent,
        subscription: &Subscription,
    ) -> Result<(), HandlerError> {
        let id = subscription.id.as_str();
        let customer = subscription.customer.id().as_str();
        let tenant =
            match existing_tenant(tx, metadata_tenant(Some(&subscription.metadata))).await? {
                Some(tenant) => {
                    map_customer(tx, tenant, customer).await?;
                    tenant
                }
                None => tenant_of_customer(tx, customer).await?.ok_or_else(|| {
                    HandlerError::new("the subscription's tenant is not known yet")
                })?,
            };
        // The customer must be this tenant's (never another tenant's subscription).
        if tenant_of_customer(tx, customer).await? != Some(tenant) {
            tracing::warn!(
                subscription = id,
                "subscription of a customer mapped to another tenant; ignored"
            );
            return Ok(());
        }
        let status = if event.event_type == "customer.subscription.deleted" {
            "canceled"
        } else {
            subscription.status.as_str()
        };
        let item = subscription.items.data.first();
        let price = item.map(|item| item.price.id.as_str());
        let period_end = item.map(|item| item.current_period_end);
        let rank = status_rank(status);
        let now = tenantkit_core::now();
        with_conn!(tx, |c| {
            sqlx::query(UPSERT_SUBSCRIPTION.as_str())
                .bind(id)
                .bind(tenant)
                .bind(customer)
                .bind(status)
                .bind(price)
                .bind(period_end)
                .bind(subscription.cancel_at_period_end)
                .bind(event.created)
                .bind(rank)
                .bind(&event.event_id)
                .bind(event.arrival)
                .bind(now)
                .execute(c)
                .await
                .map(drop)
        })?;
        if event.event_type == "customer.subscription.trial_will_end" {
            // Stripe sends it three days ahead; once per event (the handler runs exactly once).
            tx.audit_in(
                tenant,
                AuditEvent::new("billing.trial_will_end")
                    .target("tenant", tenant)
                    .details(serde_json::json!({
                        "subscription": id, "trial_end": subscription.trial_end,
                        "event_id": event.event_id,
                    })),
            )
            .await?;
        }
        self.settle_plan(tx, tenant, event).await
    }

    /// Sets the tenant's plan from its subscriptions (audited when it changes).
    async fn settle_plan(
        &self,
        tx: &mut SystemTx,
        tenant: TenantId,
        event: &StoredEvent,
    ) -> Result<(), HandlerError> {
        let rows: Vec<SubscriptionRow> = with_conn!(tx, |c| {
            sqlx::query_as(SUBSCRIPTIONS_OF_TENANT)
                .bind(tenant)
                .fetch_all(c)
                .await
        })?;
        let (plan, status) = effective(&self.plans, &rows, tenantkit_core::now());
        let current: Option<String> = tx.find_tenant(tenant).await?.map(|t| t.plan.to_string());
        if current.as_deref() == Some(plan.as_str()) {
            return Ok(());
        }
        let name = PlanName::parse(&plan)?;
        tx.set_tenant_plan(tenant, &name).await?;
        tx.audit_in(
            tenant,
            AuditEvent::new("billing.plan_changed")
                .target("tenant", tenant)
                .details(serde_json::json!({
                    "from": current, "to": plan, "status": status, "event_id": event.event_id,
                })),
        )
        .await?;
        Ok(())
    }
}

impl ObjectHandler<CheckoutSession> for SubscriptionHandler {
    fn handle<'a>(
        &'a self,
        tx: &'a mut SystemTx,
        _event: &'a StoredEvent,
        session: CheckoutSession,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move { self.checkout(tx, &session).await })
    }
}

impl ObjectHandler<Subscription> for SubscriptionHandler {
    fn handle<'a>(
        &'a self,
        tx: &'a mut SystemTx,
        event: &'a StoredEvent,
        subscription: Subscription,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move { self.subscription(tx, event, &subscription).await })
    }
}

const SUBSCRIPTIONS_OF_TENANT: &str = "SELECT subscription_id, status, price_id, current_period_end, \
     cancel_at_period_end FROM billing_subscriptions WHERE tenant_id = $1 \
     ORDER BY wm_created DESC, wm_arrival DESC, subscription_id";

#[derive(Debug, Clone, sqlx::FromRow)]
struct SubscriptionRow {
    subscription_id: String,
    status: String,
    price_id: Option<String>,
    current_period_end: Option<i64>,
    cancel_at_period_end: bool,
}

/// The plan the subscriptions grant: the newest subscription that is active or trialing (or
/// past due within the grace period) and whose price is a plan's; otherwise `free`.
fn effective(plans: &Plans, rows: &[SubscriptionRow], now: OffsetDateTime) -> (String, String) {
    for row in rows {
        let paying = match row.status.as_str() {
            "active" | "trialing" => true,
            "past_due" => row
                .current_period_end
                .is_none_or(|end| end + plans.past_due_grace_days * 86_400 > now.unix_timestamp()),
            _ => false,
        };
        if paying && let Some((name, _)) = row.price_id.as_deref().and_then(|p| plans.for_price(p))
        {
            return (name.to_owned(), row.status.clone());
        }
    }
    let status = rows.first().map_or("none", |r| r.status.as_str());
    (PlanName::FREE.to_owned(), status.to_owned())
}

/// A tenant's plan and what it grants (`GET /v1/billing`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BillingStatus {
    /// The plan in effect.
    pub plan: String,
    /// The newest subscription's status (`none` without one).
    pub status: String,
    /// When the current period ends (Unix seconds).
    pub current_period_end: Option<i64>,
    /// Whether it ends then.
    pub cancel_at_period_end: bool,
    /// What the plan grants.
    pub entitlements: Entitlements,
}

/// What a plan grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entitlements {
    /// Seats (members plus pending invitations); `null`: unlimited.
    pub seats: Option<u64>,
    /// Storage bytes; `null`: unlimited.
    pub storage_bytes: Option<u64>,
    /// Feature flags.
    pub features: Vec<String>,
}

/// Reads plans and entitlements inside a tenant's transactions: the one place seats and
/// storage limits come from.
#[derive(Debug, Clone)]
pub struct PlanBook {
    plans: Arc<Plans>,
}

impl PlanBook {
    /// Over `plans`.
    pub fn new(plans: Arc<Plans>) -> Self {
        Self { plans }
    }

    /// The plans.
    pub fn plans(&self) -> &Arc<Plans> {
        &self.plans
    }

    /// The transaction's tenant's billing status.
    ///
    /// # Errors
    /// Database errors.
    pub async fn status(&self, tx: &mut TenantTx) -> tenantkit_core::Result<BillingStatus> {
        let tenant = tx.tenant_id();
        let rows: Vec<SubscriptionRow> = with_conn!(tx, |c| {
            sqlx::query_as(SUBSCRIPTIONS_OF_TENANT)
                .bind(tenant)
                .fetch_all(c)
                .await
        })?;
        let (plan, status) = effective(&self.plans, &rows, tenantkit_core::now());
        let newest = rows.first();
        let (_, granted) = self.plans.named(&plan);
        let _ = newest.map(|r| &r.subscription_id);
        Ok(BillingStatus {
            plan,
            status,
            current_period_end: newest.and_then(|r| r.current_period_end),
            cancel_at_period_end: newest.is_some_and(|r| r.cancel_at_period_end),
            entitlements: Entitlements {
                seats: granted.seats,
                storage_bytes: granted.storage_bytes,
                features: granted.features.clone(),
            },
        })
    }
}
