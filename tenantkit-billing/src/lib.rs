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
//!   framework.
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
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

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

/// async-stripe's Stripe object types (its 1.0 line), which typed handlers receive.
pub use stripe_shared;

#[cfg(all(feature = "checkout", any(feature = "sqlite", feature = "postgres")))]
pub use checkout::{HostedSession, StripeSessions};
pub use error::{Error, Result};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use inbox::{Billing, EventState, Inbox, Ingested, StoredEvent, migrations};
pub use plans::{Plan, Plans, default_free};
pub use signature::{SignatureError, WebhookVerifier};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use subscriptions::{
    BillingStatus, Entitlements, PlanBook, SUBSCRIPTION_EVENTS, SubscriptionHandler,
    TERMINAL_STATUSES, status_rank,
};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use typed::ObjectHandler;
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
