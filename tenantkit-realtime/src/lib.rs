//! tenantkit-realtime: a WebSocket broadcaster for multi-tenant apps.
//!
//! - **Tenant channels.** A client names logical channels (`tenant`, `project:<id>`, kinds
//!   the app registers with [`Channels::kind`]); the server maps them into the caller's own
//!   tenant, so another tenant's channel cannot even be named. Each kind has an
//!   [`Authorize`] hook, checked at subscribe and again while delivering: a member who loses
//!   access stops receiving. A hidden channel and a missing one both answer `not_found`.
//! - **Resume.** Every event gets the next sequence number of its channel; history is kept
//!   within bounds ([`HistoryLimits`]). A client that reconnects and subscribes with `since`
//!   gets exactly what it missed, in order, or `recovered: false` when history no longer
//!   reaches back that far, so it knows to refetch.
//! - **Bounded.** Explicit message and frame limits (1009), small per-connection buffers, a
//!   per-connection queue with a byte budget (a slow consumer is closed with 4008, never
//!   buffered without bound), subscription and connection caps, a message rate, heartbeats
//!   with an idle timeout ([`Limits`]).
//! - **Auth.** `Authorization: Bearer`, or a single-use 30-second [`Tickets`] ticket for
//!   browsers (a long-lived token never travels in a URL); a browser `Origin` must be on the
//!   allow-list. The connection closes with 4001 when its access token expires (unless the
//!   client sends a fresh one) and with 4002 when its session is revoked, through
//!   tenantkit-auth's one revocation path.
//! - **Events from transactions.** [`publish_in`] writes an event into the transactional
//!   outbox with the change; [`Relay`] publishes it after the commit, also after a crash.
//! - **Backplanes** behind one trait, [`Backplane`]: [`MemoryBackplane`] for one instance;
//!   `RedisBackplane` (feature `redis`) and `PgBackplane` (feature `postgres`) for several,
//!   each with a [`tenantkit_auth::RevocationBus`] that crosses instances too.
//!
//! The wire protocol (v1) is in [`protocol`]; the AsyncAPI document is [`protocol::ASYNCAPI`].
//!
//! The crate does not depend on axum: [`RealtimeService`] is a tower service over `http`
//! and hyper's upgrades, mountable in axum (`route_service`) and in plain hyper.

#![forbid(unsafe_code)]
#![cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(rustdoc::broken_intra_doc_links)
)]

mod backplane;
mod channel;
mod connection;
mod error;
mod hub;
mod limits;
pub mod protocol;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod relay;
mod service;
mod tasks;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod tickets;

#[cfg(feature = "postgres")]
pub use backplane::PgBackplane;
#[cfg(feature = "redis")]
pub use backplane::RedisBackplane;
pub use backplane::{Backplane, Event, HistoryLimits, MemoryBackplane, Publish, Replay};
pub use channel::{
    Authorize, BoxFuture, ChannelKey, ChannelName, Channels, MAX_CHANNEL_LEN, TENANT,
};
pub use error::{Error, Result};
pub use hub::RealtimeStats;
pub use limits::Limits;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use relay::{MemberEventsToRealtime, OUTBOX_TOPIC, Relay, publish_in};
pub use service::{Body, MAX_EVENT_NAME_LEN, Realtime, RealtimeBuilder, RealtimeService};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use tickets::{TICKET_PREFIX, Ticket, Tickets};

/// tenantkit-realtime's migrations (versions 5000–5999): the ticket table, and on PostgreSQL
/// the tables of `PgBackplane`. Add them to the application's registry: `Migrations::new().with(tenantkit_realtime::migrations())`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub fn migrations() -> tenantkit_core::MigrationSet {
    tenantkit_core::migration_set!("tenantkit-realtime")
}
