//! One revocation path: every place that ends sessions (logout, logout everywhere, a
//! password change or reset, a demotion, a removal, a refresh-token replay, the operator's
//! tenant deletion) goes through [`Revocations`], which writes the revocation once (in the
//! caller's transaction where there is one, so it commits atomically with the change that
//! caused it) and, only after that commit, publishes a [`Revocation`] on a [`RevocationBus`].
//!
//! [`crate::CachedSessionCheck`] listens (see
//! [`CachedSessionCheck::with_revocations`](crate::CachedSessionCheck::with_revocations)) and
//! forgets the cached answers a message covers, so a revoked session's access tokens are
//! refused at once rather than after the cache's TTL.
//!
//! The default bus, [`LocalRevocationBus`], is in-process (a tokio broadcast channel): enough
//! for one instance. Several instances need a bus that crosses processes (Redis pub/sub,
//! PostgreSQL `LISTEN`/`NOTIFY`); such a bus implements [`RevocationBus`] by sending each
//! published message to the other instances and handing what it receives to a local
//! broadcast channel, which its `subscribe` returns. A [`Revocation`] is serde-serializable
//! for that purpose. A message may be lost (a bus is not durable): the cache's short TTL still
//! bounds how long a stale answer lives, and the database stays the truth.
//!
//! ```
//! use tenantkit_auth::{Revocation, RevocationScope, Revocations};
//! use tenantkit_core::{SessionId, UserId};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let revocations = Revocations::in_process();
//! let mut heard = revocations.subscribe();
//! let session = SessionId::new();
//! revocations.publish(Revocation::new(
//!     RevocationScope::Session(session),
//!     vec![session],
//!     "logout",
//!     tenantkit_core::now(),
//! ));
//! let message = heard.recv().await.unwrap();
//! assert_eq!(message.sessions, [session]);
//! assert!(message.covers(session, UserId::new(), tenantkit_core::TenantId::new()));
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tenantkit_core::{SessionId, TenantId, UserId};
use time::OffsetDateTime;
use tokio::sync::broadcast;

/// Which sessions a revocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "of", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RevocationScope {
    /// One session (logout, a refresh-token replay).
    Session(SessionId),
    /// Every session of a user (only those in `tenant`, if given) except `except`.
    User {
        /// The user.
        user: UserId,
        /// Only the user's sessions in this tenant (a demotion, a removal).
        tenant: Option<TenantId>,
        /// A session kept (the one that changed the password).
        except: Option<SessionId>,
    },
    /// Every session in a tenant (the tenant was deleted).
    Tenant(TenantId),
    /// Revocations may have been missed: a bus that crosses processes lost its connection
    /// and reconnected. Not a revocation of its own (nothing is written; [`Revocations`]
    /// refuses to write it): it covers every session, so a listener treats every cached
    /// answer as stale (a session cache forgets them, a broadcaster makes its clients
    /// reconnect and be checked again).
    Missed,
}

impl RevocationScope {
    /// Whether a session of `user` in `tenant` with this id is in the scope.
    pub fn contains(&self, session: SessionId, user: UserId, tenant: TenantId) -> bool {
        match *self {
            Self::Session(id) => id == session,
            Self::User {
                user: who,
                tenant: only,
                except,
            } => who == user && only.is_none_or(|t| t == tenant) && except != Some(session),
            Self::Tenant(t) => t == tenant,
            Self::Missed => true,
        }
    }
}

/// What a bus carries: sessions that were revoked (committed) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// The scope of the revocation: a listener evicts everything it covers, which includes
    /// sessions the writer did not list.
    pub scope: RevocationScope,
    /// The sessions the revocation ended, where the writer knows them (the database's
    /// revocations list every session they ended; a custom [`crate::SessionStore`]'s user-wide
    /// revocation may list none and rely on [`Revocation::scope`]).
    pub sessions: Vec<SessionId>,
    /// Why: `logout`, `logout_all`, `password_changed`, `password_reset`, `demoted`,
    /// `removed`, `refresh_token_reused`, `tenant_deleted`, or the caller's own word.
    pub reason: String,
    /// When the revocation was written.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl Revocation {
    /// A message about `sessions` revoked within `scope`.
    pub fn new(
        scope: RevocationScope,
        sessions: Vec<SessionId>,
        reason: &str,
        at: OffsetDateTime,
    ) -> Self {
        Self {
            scope,
            sessions,
            reason: reason.to_owned(),
            at,
        }
    }

    /// Whether this message ends the session `session` of `user` in `tenant` (listed, or in
    /// the scope).
    pub fn covers(&self, session: SessionId, user: UserId, tenant: TenantId) -> bool {
        self.sessions.contains(&session) || self.scope.contains(session, user, tenant)
    }
}

/// Carries committed revocations to every listener (in this process and, for a distributed
/// bus, in the others).
pub trait RevocationBus: fmt::Debug + Send + Sync + 'static {
    /// Sends `revocation` to every subscriber. Called after the revocation committed, on the
    /// committing task: it must not block (a networked bus queues the message and sends it
    /// from a task of its own). Delivery is best effort.
    fn publish(&self, revocation: Revocation);

    /// A new subscription: every message published from now on. A subscriber that falls
    /// behind by more than the channel holds gets [`broadcast::error::RecvError::Lagged`] and
    /// must assume it missed revocations (a cache forgets everything).
    fn subscribe(&self) -> broadcast::Receiver<Arc<Revocation>>;
}

impl Revocation {
    /// The message a cross-process bus hands its local subscribers after it reconnected:
    /// [`RevocationScope::Missed`].
    pub fn missed(at: OffsetDateTime) -> Self {
        Self::new(RevocationScope::Missed, Vec::new(), "missed", at)
    }
}

/// The in-process [`RevocationBus`]: a tokio broadcast channel. Publishing with no subscriber
/// is not an error.
#[derive(Debug, Clone)]
pub struct LocalRevocationBus {
    sender: broadcast::Sender<Arc<Revocation>>,
}

impl LocalRevocationBus {
    /// Messages a subscriber may fall behind by before it lags.
    pub const CAPACITY: usize = 1024;

    /// A bus holding up to [`LocalRevocationBus::CAPACITY`] messages per subscriber.
    pub fn new() -> Self {
        Self {
            sender: broadcast::channel(Self::CAPACITY).0,
        }
    }
}

impl Default for LocalRevocationBus {
    fn default() -> Self {
        Self::new()
    }
}

impl RevocationBus for LocalRevocationBus {
    fn publish(&self, revocation: Revocation) {
        // No subscriber: nobody caches anything to evict.
        let _ = self.sender.send(Arc::new(revocation));
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Revocation>> {
        self.sender.subscribe()
    }
}

/// The revocation service: writes revocations and publishes them after their commit. Cheap to
/// clone; [`crate::RefreshSessions`] holds one (see
/// [`RefreshSessions::with_revocations`](crate::RefreshSessions::with_revocations)), and the
/// flows use that one.
#[derive(Debug, Clone)]
pub struct Revocations {
    bus: Arc<dyn RevocationBus>,
}

impl Default for Revocations {
    fn default() -> Self {
        Self::in_process()
    }
}

impl Revocations {
    /// Revocations published on `bus`.
    pub fn new(bus: Arc<dyn RevocationBus>) -> Self {
        Self { bus }
    }

    /// Revocations published on a new [`LocalRevocationBus`].
    pub fn in_process() -> Self {
        Self::new(Arc::new(LocalRevocationBus::new()))
    }

    /// The bus.
    pub fn bus(&self) -> &Arc<dyn RevocationBus> {
        &self.bus
    }

    /// A new subscription to the bus.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Revocation>> {
        self.bus.subscribe()
    }

    /// Publishes a revocation that is already committed (a [`crate::SessionStore`]'s own
    /// write). Revocations written in a caller's transaction use
    /// [`Revocations::revoke_in`] instead, which publishes only after that commit.
    pub fn publish(&self, revocation: Revocation) {
        tracing::debug!(
            reason = %revocation.reason,
            sessions = revocation.sessions.len(),
            "sessions revoked"
        );
        self.bus.publish(revocation);
    }

    /// Revokes the live sessions in `scope` inside `tx` (so the revocation commits with the
    /// change that caused it, or not at all) and publishes them once `tx` has committed
    /// (never when it rolls back). Returns the sessions it revoked.
    ///
    /// # Errors
    /// Database errors.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub async fn revoke_in<T: CommitHook>(
        &self,
        tx: &mut T,
        scope: RevocationScope,
        reason: &str,
        at: OffsetDateTime,
    ) -> tenantkit_core::Result<Vec<SessionId>> {
        let sessions = crate::store::sessions::revoke_rows(tx, scope, at, reason).await?;
        let revocation = Revocation::new(scope, sessions.clone(), reason, at);
        let this = self.clone();
        tx.on_commit(Box::new(move || this.publish(revocation)));
        Ok(sessions)
    }

    /// Revokes the listed sessions that are still live inside `tx`, each through the one
    /// revocation statement, and publishes them in one message once `tx` has committed (its
    /// scope the first of them, its list all of them). Returns the sessions it revoked.
    ///
    /// # Errors
    /// Database errors.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub async fn revoke_listed_in<T: CommitHook>(
        &self,
        tx: &mut T,
        listed: &[SessionId],
        reason: &str,
        at: OffsetDateTime,
    ) -> tenantkit_core::Result<Vec<SessionId>> {
        let mut sessions = Vec::with_capacity(listed.len());
        for &id in listed {
            let scope = RevocationScope::Session(id);
            sessions.extend(crate::store::sessions::revoke_rows(tx, scope, at, reason).await?);
        }
        if let Some(&first) = sessions.first() {
            let scope = RevocationScope::Session(first);
            let revocation = Revocation::new(scope, sessions.clone(), reason, at);
            let this = self.clone();
            tx.on_commit(Box::new(move || this.publish(revocation)));
        }
        Ok(sessions)
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sealed {
    pub trait Sealed {}
    impl Sealed for tenantkit_core::TenantTx {}
    impl Sealed for tenantkit_core::SystemTx {}
    impl Sealed for tenantkit_core::UserTx {}
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
/// The transactions a revocation can be written in: tenantkit-core's three kinds, whose
/// `after_commit` hooks publish it. Sealed.
pub trait CommitHook: tenantkit_core::Transaction + sealed::Sealed {
    /// Registers `hook` with the transaction's `after_commit`.
    fn on_commit(&mut self, hook: Box<dyn FnOnce() + Send + 'static>);
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl CommitHook for tenantkit_core::TenantTx {
    fn on_commit(&mut self, hook: Box<dyn FnOnce() + Send + 'static>) {
        self.after_commit(hook);
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl CommitHook for tenantkit_core::SystemTx {
    fn on_commit(&mut self, hook: Box<dyn FnOnce() + Send + 'static>) {
        self.after_commit(hook);
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl CommitHook for tenantkit_core::UserTx {
    fn on_commit(&mut self, hook: Box<dyn FnOnce() + Send + 'static>) {
        self.after_commit(hook);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A bus that crosses processes sends revocations as JSON: every scope round-trips.
    #[test]
    fn every_scope_round_trips_through_json() {
        let session = SessionId::new();
        let scopes = [
            RevocationScope::Session(session),
            RevocationScope::User {
                user: UserId::new(),
                tenant: Some(TenantId::new()),
                except: Some(session),
            },
            RevocationScope::User {
                user: UserId::new(),
                tenant: None,
                except: None,
            },
            RevocationScope::Tenant(TenantId::new()),
            RevocationScope::Missed,
        ];
        for scope in scopes {
            let revocation = Revocation::new(scope, vec![session], "logout", tenantkit_core::now());
            let json = serde_json::to_string(&revocation).unwrap();
            let back: Revocation = serde_json::from_str(&json).unwrap();
            assert_eq!(back, revocation, "{json}");
        }
        let json = serde_json::to_value(Revocation::new(
            RevocationScope::Session(session),
            vec![],
            "logout",
            tenantkit_core::now(),
        ))
        .unwrap();
        assert_eq!(json["scope"]["kind"], "session");
        assert_eq!(json["scope"]["of"], session.to_string());
    }
}
