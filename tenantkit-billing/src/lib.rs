//! # tenantkit-billing
//!
//! Stripe webhooks done right by construction: anyone can POST to a webhook endpoint, Stripe
//! delivers at least once and in no guaranteed order, so
//!
//! - [`WebhookVerifier`] checks `Stripe-Signature` on the raw bytes (HMAC-SHA256 of
//!   `"{t}.{body}"`, any of several `v1` signatures, several endpoint secrets during a
//!   rotation, a 300 s tolerance both ways, constant-time comparison);
//! - [`Inbox`] (features `sqlite`/`postgres`) stores each verified event in this crate's own
//!   table ([`migrations`]) keyed by event id (`INSERT … ON CONFLICT DO NOTHING`: a duplicate
//!   delivery is a no-op), and the endpoint answers 2xx only after that commit, never waiting
//!   for handlers;
//! - [`Billing::receive`] is the whole endpoint as one call (limit, verify, store), for any
//!   framework; with the `axum` feature, [`axum::webhook_route`] is that endpoint as a route
//!   to mount, refusing with problem+json and stable codes;
//! - the [`Worker`] hands stored events to their handlers ([`EventRouter`]; typed ones,
//!   [`ObjectHandler`], receive async-stripe's objects) inside the transaction that marks the
//!   event done, retries failures ([`HandlerError`]) with backoff and keeps dead letters for
//!   [`Inbox::replay`]; [`Worker::run`] is its loop, until a shutdown future completes;
//! - [`SubscriptionHandler`] keeps subscriptions and the tenant's plan in step with Stripe,
//!   and [`PlanBook`] reads the plan's entitlements inside a tenant's transaction.
//!
//! A handler runs in a system transaction; to write the rows of the tenant an event belongs
//! to, it acts in that tenant with [`SystemTx::in_tenant`](tenantkit_core::SystemTx::in_tenant)
//! (row-level security on PostgreSQL admits that tenant's rows and no other's).
//!
//! ```
//! use tenantkit_billing::{WebhookVerifier, signature::sign};
//!
//! let verifier = WebhookVerifier::new(&["whsec_test"]).unwrap();
//! let body = br#"{"id":"evt_1","object":"event","type":"invoice.paid","created":1}"#;
//! let now = time::OffsetDateTime::now_utc();
//! let header = sign("whsec_test", now.unix_timestamp(), body);
//! assert!(verifier.verify(Some(header.as_bytes()), body, now).is_ok());
//! assert!(verifier.verify(Some(header.as_bytes()), b"{}", now).is_err());
//! ```
//!
//! The whole path, on an in-memory SQLite database: a typed handler that records each paid
//! invoice in the tenant's own `receipts` table, the worker, and its loop with a shutdown.
#![cfg_attr(
    feature = "sqlite",
    doc = r##"
```
use std::sync::Arc;
use tenantkit_billing::stripe_shared::Invoice;
use tenantkit_billing::{
    Billing, BoxFuture, HandlerError, ObjectHandler, Outcome, Plans, StoredEvent,
    SubscriptionHandler, WebhookVerifier, Worker, tenant_of_customer,
};
use tenantkit_core::{SystemTx, with_conn};

#[derive(Debug)]
struct Receipts;

impl ObjectHandler<Invoice> for Receipts {
    fn handle<'a>(
        &'a self,
        tx: &'a mut SystemTx,
        _event: &'a StoredEvent,
        invoice: Invoice,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let customer = invoice.customer.as_ref().ok_or(HandlerError::permanent("no customer"))?;
            // Mapped by the checkout session SubscriptionHandler handles; until then, retried.
            let tenant = tenant_of_customer(tx, customer.id().as_str())
                .await?
                .ok_or("the customer's tenant is not known yet")?;
            let mut in_tenant = tx.in_tenant(tenant).await?;
            with_conn!(&mut in_tenant, |c| {
                sqlx::query("INSERT INTO receipts (tenant_id, amount) VALUES ($1, $2)")
                    .bind(tenant)
                    .bind(invoice.amount_paid)
                    .execute(c)
                    .await
                    .map(drop)
            })?;
            in_tenant.leave().await?;
            Ok(())
        })
    }
}

# #[tokio::main(flavor = "current_thread")]
# async fn main() -> Result<(), Box<dyn std::error::Error>> {
# use tenantkit_core::{Database, Migrations, NewTenant, TenantScope};
# let db = Database::connect("sqlite::memory:").await?;
# db.migrate(&Migrations::new().with(tenantkit_billing::migrations())).await?;
# let mut tx = db.begin_system().await?;
# with_conn!(&mut tx, |c| {
#     sqlx::query("CREATE TABLE receipts (tenant_id TEXT NOT NULL, amount INTEGER NOT NULL)")
#         .execute(c).await.map(drop)
# })?;
# tx.commit().await?;
# let (tenant, tx) = db.create_tenant(NewTenant { name: "Acme".into(), slug: None }).await?;
# tx.commit().await?;
# let start = tenantkit_core::now().unix_timestamp();
# let life = tenantkit_billing::testing::SubscriptionLife::new(&tenant.id.to_string(), "price_pro", "doc", start)
#     .checkout_completed(0)
#     .invoice("paid", 1);
// The endpoint (in axum: `tenantkit_billing::axum::webhook_route(billing)`).
let billing = Billing::new(db.clone(), Some(WebhookVerifier::new(&["whsec_test"])?));
for event in life.events() {
    let signature = event.signature("whsec_test", start);
    billing.receive(Some(signature.as_bytes()), &event.body).await?;
}
// Subscriptions and plans, and the receipts.
let router = SubscriptionHandler::router(Arc::new(Plans::default()))
    .on_object::<Invoice, _>("invoice.paid", Arc::new(Receipts));
let worker = Worker::new(db.clone(), router);
let later = tenantkit_core::now() + time::Duration::seconds(2);
while worker.run_once(later).await? != Outcome::Idle {}
# let mut tx = db.begin_read(&TenantScope::for_system(tenant.id)).await?;
# let receipts: i64 = with_conn!(&mut tx, |c| {
#     sqlx::query_scalar("SELECT count(*) FROM receipts").fetch_one(c).await
# })?;
# assert_eq!(receipts, 1);

// In a service: the loop, until shutdown.
let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
let running = tokio::spawn(async move { worker.run(async { let _ = stopped.await; }).await });
let _ = stop.send(());
running.await?;
# Ok(())
# }
```
"##
)]
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

#[cfg(feature = "axum")]
pub mod axum;
#[cfg(all(feature = "checkout", any(feature = "sqlite", feature = "postgres")))]
mod checkout;
mod error;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod inbox;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod ingest;
pub mod plans;
pub mod signature;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod subscriptions;
pub mod testing;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod typed;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod worker;

/// The JSON parser async-stripe's types implement, which [`ObjectHandler`]'s object type must
/// implement too (`miniserde::Deserialize`): re-exported, so a handler never names a crate of
/// its own for it.
pub use miniserde;
/// async-stripe's Stripe object types (its 1.0 line), which typed handlers receive.
pub use stripe_shared;

#[cfg(all(feature = "checkout", any(feature = "sqlite", feature = "postgres")))]
pub use checkout::{HostedSession, StripeSessions};
pub use error::{Error, HandlerError, Result};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use inbox::{Billing, EventState, Inbox, Ingested, StoredEvent, migrations};
pub use plans::{Plan, Plans, default_free};
pub use signature::{SignatureError, WebhookVerifier};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use subscriptions::{
    BillingStatus, Entitlements, PlanBook, SUBSCRIPTION_EVENTS, SubscriptionHandler,
    TERMINAL_STATUSES, status_rank, tenant_of_customer,
};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use typed::{ObjectFn, ObjectHandler};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use worker::{BoxFuture, EventHandler, EventRouter, Outcome, Worker, WorkerStats};

/// The Stripe API version async-stripe's types (and so typed handlers) are generated from:
/// set the webhook endpoint's API version to it.
pub const API_VERSION: &str = "2026-09-30.endive";

/// The largest webhook body read by default (Stripe's events are far smaller).
pub const DEFAULT_BODY_LIMIT: usize = 512 * 1024;

#[cfg(test)]
mod tests {
    #[test]
    fn the_api_version_is_async_stripes() {
        assert_eq!(super::API_VERSION, stripe_shared::version::VERSION.as_str());
    }
}
