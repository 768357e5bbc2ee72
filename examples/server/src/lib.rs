//! # tenantkit-server
//!
//! The reference server: every tenantkit crate wired into one axum application.
//!
//! `cargo run -p tenantkit-server` starts it with no setup on an embedded SQLite database
//! under `./data`; environment variables (see [`Config`]) switch each part to production
//! components. The library half exists so tests can run the exact same application
//! in-process: [`Server::prepare`] sets it up and [`Server::serve`] runs it, for the binary
//! and the end-to-end tests alike; [`app`] builds the router with all of its layers.
//!
//! Where things live: the HTTP adapters in `routes`, the example domain (projects and tasks,
//! its tables and migrations) in [`domain`], the auth flows in `tenantkit_auth::flows`, the
//! data layer, directory and audit log in `tenantkit_core`.

pub mod admin;
mod config;
mod connections;
pub mod domain;
mod entitlements;
pub mod extract;
pub mod keys;
mod layers;
pub mod realtime;
mod routes;
mod run;
mod telemetry;

pub use config::{
    Config, ForwardedHeader, LogFormat, RealtimeBackplaneKind, SessionCheckMode, SignupMode,
    StorageBackend, redact_url,
};
pub use layers::app;
pub use routes::{SIGNED_URL_ROUTES, UNDOCUMENTED_ROUTES};
pub use run::{
    Server, ServerError, access_tokens, auth_flows, auth_flows_on, migrate, open_database, plans,
    refresh_sessions, refresh_sessions_on, run, shutdown_signal, storage,
};
pub use telemetry::init_tracing;

use std::sync::Arc;

use tenantkit_auth::flows::AuthFlows;
use tenantkit_core::{Database, Problem};

/// What every handler can reach. One `Arc`: extracting it in a handler (axum clones the
/// state for every request) costs one reference count, not one per component.
#[derive(Debug, Clone)]
pub struct AppState(Arc<StateParts>);

/// The parts of [`AppState`], reached through it (`state.db`, `state.auth`).
#[derive(Debug, Clone)]
pub struct StateParts {
    /// The application's database (on PostgreSQL, an RLS-bound role).
    pub db: Database,
    /// The auth flows (tokens, sessions, passwords, rate limits, mail).
    pub auth: AuthFlows,
    /// The OpenAPI document, as JSON (set when the router is built).
    pub(crate) openapi: Arc<str>,
    /// The reverse proxies whose forwarding header (only the configured one) names the client.
    pub proxies: Arc<tenantkit_core::TrustedProxies>,
    /// The upload lifecycle (tenantkit-storage).
    pub storage: tenantkit_storage::Storage,
    /// The service answering local storage's signed URLs (with the local backend).
    pub local_storage: Option<tenantkit_storage::LocalStorageService>,
    /// The Stripe webhook endpoint and its inbox (tenantkit-billing).
    pub billing: tenantkit_billing::Billing,
    /// Plans and entitlements (seats, storage) per tenant.
    pub plans: tenantkit_billing::PlanBook,
    /// Stripe-hosted Checkout and portal sessions (with `TENANTKIT_STRIPE_API_KEY`).
    pub stripe: Option<tenantkit_billing::StripeSessions>,
    /// The WebSocket broadcaster (tenantkit-realtime).
    pub realtime: tenantkit_realtime::Realtime,
    /// Single sign-on through each tenant's identity provider (tenantkit-auth's `sso`); the
    /// routes answer 404 without it.
    pub sso: Option<tenantkit_auth::sso::Sso>,
}

/// The extractors' view of the state: the trusted proxies for the client's address
/// (`tenantkit_core::ClientInfo`, [`extract::ClientIp`]).
impl axum::extract::FromRef<AppState> for Arc<tenantkit_core::TrustedProxies> {
    fn from_ref(state: &AppState) -> Self {
        state.proxies.clone()
    }
}

/// The extractors' view of the state: the database of the tenant transactions
/// ([`extract::TenantRead`], [`extract::TenantWrite`]).
impl axum::extract::FromRef<AppState> for Database {
    fn from_ref(state: &AppState) -> Self {
        state.db.clone()
    }
}

impl std::ops::Deref for AppState {
    type Target = StateParts;

    fn deref(&self) -> &StateParts {
        &self.0
    }
}

impl AppState {
    /// Believes the forwarding header of these proxies, the one they are configured with (see
    /// [`tenantkit_core::TrustedProxies`] and [`tenantkit_core::ForwardedHeader`]).
    pub fn with_proxies(mut self, proxies: tenantkit_core::TrustedProxies) -> Self {
        self.parts_mut().proxies = Arc::new(proxies);
        self
    }

    /// State over an open, migrated database, the auth flows and the upload lifecycle
    /// (`local_storage`: the service answering a local store's signed URLs).
    pub fn new(
        db: Database,
        auth: AuthFlows,
        storage: tenantkit_storage::Storage,
        local_storage: Option<tenantkit_storage::LocalStorageService>,
    ) -> Self {
        let billing = tenantkit_billing::Billing::new(db.clone(), None);
        let realtime = tenantkit_realtime::Realtime::builder(auth.tokens().clone())
            .channels(crate::realtime::channels(&db))
            .tickets(tenantkit_realtime::Tickets::new(db.clone()))
            .revocations(auth.sessions().revocations())
            .build();
        Self(Arc::new(StateParts {
            realtime,
            billing,
            plans: tenantkit_billing::PlanBook::new(Arc::default()),
            stripe: None,
            db,
            auth,
            openapi: Arc::from("{}"),
            proxies: Arc::default(),
            storage,
            local_storage,
            sso: None,
        }))
    }

    /// Serves single sign-on with `sso`.
    pub fn with_sso(mut self, sso: Option<tenantkit_auth::sso::Sso>) -> Self {
        self.parts_mut().sso = sso;
        self
    }

    /// Verifies Stripe deliveries with `verifier` (without one every delivery is refused)
    /// and derives entitlements from `plans`.
    pub fn with_billing(
        mut self,
        verifier: Option<tenantkit_billing::WebhookVerifier>,
        plans: tenantkit_billing::PlanBook,
    ) -> Self {
        let db = self.db.clone();
        let parts = self.parts_mut();
        parts.billing = tenantkit_billing::Billing::new(db, verifier);
        parts.plans = plans;
        self
    }

    /// Serves realtime connections with `realtime`.
    pub fn with_realtime(mut self, realtime: tenantkit_realtime::Realtime) -> Self {
        self.parts_mut().realtime = realtime;
        self
    }

    /// Creates Checkout and portal sessions with `sessions`.
    pub fn with_stripe_sessions(
        mut self,
        sessions: Option<tenantkit_billing::StripeSessions>,
    ) -> Self {
        self.parts_mut().stripe = sessions;
        self
    }

    /// The parts, to change while setting up (copied first if the state is shared).
    pub(crate) fn parts_mut(&mut self) -> &mut StateParts {
        Arc::make_mut(&mut self.0)
    }
}

/// The result of a handler: errors become `application/problem+json` answers.
pub type Result<T, E = Problem> = std::result::Result<T, E>;
