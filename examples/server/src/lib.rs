//! # tenantkit-server
//!
//! The reference server: every tenantkit crate wired into one axum application.
//!
//! `cargo run -p tenantkit-server` starts it with no setup on an embedded SQLite database
//! under `./data`; environment variables (see [`Config`]) switch each part to production
//! components. The library half exists so tests can run the exact same application
//! in-process: [`app`] builds the router with all of its layers, [`serve`] runs it.

pub mod admin;
mod config;
pub mod extract;
pub mod keys;
mod layers;
mod routes;
mod run;
mod telemetry;

pub use config::{redact_url, Config, LogFormat};
pub use layers::app;
pub use run::{
    access_tokens, migrate, open_database, refresh_sessions, run, serve, shutdown_signal,
    ServerError,
};
pub use telemetry::init_tracing;

use std::sync::Arc;

use tenantkit_auth::{
    AccessTokens, Mailer, OutboxMailer, PasswordHasher, RateLimits, RefreshSessions,
};
use tenantkit_core::{Database, Problem};

/// What every handler can reach. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The application's database (on PostgreSQL, an RLS-bound role).
    pub db: Database,
    /// Issues and verifies access tokens.
    pub tokens: AccessTokens,
    /// Refresh sessions, stored in the database.
    pub sessions: RefreshSessions<Database>,
    /// Password hashing on a bounded pool.
    pub passwords: PasswordHasher,
    /// Login, signup and refresh rate limits.
    pub limits: Arc<RateLimits>,
    /// Delivers password-reset and verification emails.
    pub mailer: Arc<dyn Mailer>,
    /// The base URL of links in emails.
    pub public_url: Arc<str>,
}

impl AppState {
    /// State over an open, migrated database, the token keys and the refresh sessions, with
    /// the default password hasher and the rate limits of `config`.
    pub fn new(
        db: Database,
        tokens: AccessTokens,
        sessions: RefreshSessions<Database>,
        config: &Config,
    ) -> Self {
        Self {
            db,
            tokens,
            sessions,
            passwords: PasswordHasher::new(),
            limits: Arc::new(RateLimits::new(config.rate_limits())),
            mailer: Arc::new(OutboxMailer::new(config.data_dir.join("outbox"))),
            public_url: config.public_url().into(),
        }
    }

    /// Records `event` in `tenant`'s audit log in a transaction of its own (for events that
    /// change nothing else in that tenant, such as a login).
    ///
    /// # Errors
    /// Database errors.
    pub async fn audit(
        &self,
        tenant: tenantkit_core::TenantId,
        event: tenantkit_core::AuditEvent,
    ) -> Result<()> {
        // The tenant comes from our own records (a session, a membership), never the request.
        let mut tx = self
            .db
            .begin(&tenantkit_core::TenantScope::for_system(tenant))
            .await?;
        tx.audit(event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Refuses a caller whose session was revoked or has expired, for operations that create
    /// new sessions from an access token (which may outlive its session by up to 15 minutes).
    ///
    /// # Errors
    /// `invalid_token` when the session is over.
    pub async fn require_live_session(&self, principal: &tenantkit_core::Principal) -> Result<()> {
        if self
            .db
            .session_is_over(principal.session_id(), tenantkit_core::now())
            .await?
        {
            return Err(tenantkit_auth::Error::InvalidToken("session is over").into());
        }
        Ok(())
    }

    /// Sends `message` in the background: the answer to the client does not wait for (or
    /// reveal anything through) mail delivery. Failures are logged, never the body.
    pub fn send_mail_in_background(&self, message: tenantkit_auth::Message) {
        let mailer = self.mailer.clone();
        tokio::spawn(async move {
            if let Err(err) = mailer.send(message).await {
                tracing::error!(error = %err, "sending email failed");
            }
        });
    }

    /// Replaces the mailer (an SMTP or API adapter in production, a memory mailer in tests).
    pub fn with_mailer(mut self, mailer: Arc<dyn Mailer>) -> Self {
        self.mailer = mailer;
        self
    }
}

/// The result of a handler: errors become `application/problem+json` answers.
pub type Result<T, E = Problem> = std::result::Result<T, E>;
