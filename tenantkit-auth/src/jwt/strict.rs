//! Revocation-aware verification: access tokens of revoked or expired sessions are refused
//! before they expire, and the caller's current role replaces the one in the token.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tenantkit_core::{Clock, Principal, Role, SessionId, SystemClock, TenantId, UserId};
use time::OffsetDateTime;
use tokio::sync::broadcast;

use crate::{Result, Revocation, Revocations};

/// The future of a [`SessionCheck`].
pub type CheckFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// What a session check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// The session is live; `role` is the caller's role in the token's tenant now (`None`:
    /// this check does not know memberships, keep the token's).
    Live {
        /// The current role.
        role: Option<Role>,
    },
    /// The session was revoked, expired, its user's credentials changed, or the user is no
    /// longer a member: the token must not be accepted.
    Over,
}

/// Decides whether a verified access token's session is still live, and the caller's role now.
///
/// tenantkit implements it for [`crate::RefreshSessions`] over the database (sessions,
/// credentials epochs and memberships in one query) and over [`crate::MemorySessionStore`]
/// (sessions only).
pub trait SessionCheck: fmt::Debug + Send + Sync + 'static {
    /// Checks the session of `principal`.
    fn check<'a>(&'a self, principal: &'a Principal) -> CheckFuture<'a, SessionState>;
}

/// A [`SessionCheck`] with a short-lived, bounded cache in front, so the check costs one
/// lookup per session per `ttl` rather than one per request. A revocation, removal or role
/// change therefore takes effect within `ttl` (5 seconds by default, and never more), and at
/// once when the cache listens to the revocations
/// ([`CachedSessionCheck::with_revocations`]).
#[derive(Clone)]
pub struct CachedSessionCheck {
    inner: Arc<dyn SessionCheck>,
    ttl: Duration,
    capacity: usize,
    clock: Arc<dyn Clock>,
    cache: Arc<Mutex<HashMap<SessionId, Cached>>>,
    /// The revocations heard, drained before every lookup.
    heard: Option<Arc<Mutex<broadcast::Receiver<Arc<Revocation>>>>>,
    /// Bumped by every revocation heard: an answer read while one arrived is not cached.
    generation: Arc<AtomicU64>,
}

/// A cached answer: the state, when it was read, and whose session it is (a revocation may
/// name a user or a tenant rather than sessions).
#[derive(Debug, Clone, Copy)]
struct Cached {
    state: SessionState,
    at: OffsetDateTime,
    user: UserId,
    tenant: TenantId,
}

impl fmt::Debug for CachedSessionCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedSessionCheck")
            .field("inner", &self.inner)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl CachedSessionCheck {
    /// The longest a cached answer is trusted.
    pub const MAX_TTL: Duration = Duration::from_secs(5);

    /// Caches answers of `inner` for 5 seconds, for at most 100,000 sessions.
    pub fn new(inner: Arc<dyn SessionCheck>) -> Self {
        Self::with_ttl(inner, Self::MAX_TTL)
    }

    /// Caches answers for `ttl` (at most [`CachedSessionCheck::MAX_TTL`]; zero: no caching).
    pub fn with_ttl(inner: Arc<dyn SessionCheck>, ttl: Duration) -> Self {
        Self::with_clock(inner, ttl, Arc::new(SystemClock))
    }

    /// The same on an explicit clock (tests move it instead of sleeping).
    pub fn with_clock(inner: Arc<dyn SessionCheck>, ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner,
            ttl: ttl.min(Self::MAX_TTL),
            capacity: 100_000,
            clock,
            cache: Arc::default(),
            heard: None,
            generation: Arc::default(),
        }
    }

    /// Listens to `revocations`: a cached answer about a session a revocation covers is
    /// forgotten before the next check, so a revoked session's tokens are refused at once,
    /// not after the TTL. Messages are read at the start of each check (no task of its own);
    /// when more arrived than the bus holds, the whole cache is forgotten.
    ///
    /// Use the [`Revocations`] the flows use ([`crate::RefreshSessions::revocations`]).
    #[must_use]
    pub fn with_revocations(mut self, revocations: &Revocations) -> Self {
        self.heard = Some(Arc::new(Mutex::new(revocations.subscribe())));
        self
    }

    /// Applies the revocations heard since the last check.
    fn drain(&self) {
        let Some(heard) = &self.heard else {
            return;
        };
        let mut heard = heard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            match heard.try_recv() {
                Ok(revocation) => {
                    self.generation.fetch_add(1, Ordering::SeqCst);
                    self.lock().retain(|session, cached| {
                        !revocation.covers(*session, cached.user, cached.tenant)
                    });
                }
                Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "the session cache fell behind the revocations; forgetting every answer"
                    );
                    self.generation.fetch_add(1, Ordering::SeqCst);
                    self.lock().clear();
                }
                Err(
                    broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed,
                ) => break,
            }
        }
    }

    /// The state of `principal`'s session, from the cache when fresh.
    ///
    /// # Errors
    /// The underlying check's errors.
    pub async fn check(&self, principal: &Principal) -> Result<SessionState> {
        self.drain();
        let now = self.clock.now();
        let session = principal.session_id();
        if let Some(Cached { state, at, .. }) = self.lock().get(&session).copied()
            && now - at < self.ttl
            && now >= at
        {
            return Ok(state);
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let state = self.inner.check(principal).await?;
        // A revocation heard while the check ran may postdate what it read: answer it, but do
        // not keep it.
        self.drain();
        if !self.ttl.is_zero() && self.generation.load(Ordering::SeqCst) == generation {
            let mut cache = self.lock();
            if cache.len() >= self.capacity {
                // Bounded memory: drop stale entries, and everything if that is not enough.
                let ttl = self.ttl;
                cache.retain(|_, cached| now - cached.at < ttl);
                if cache.len() >= self.capacity {
                    cache.clear();
                }
            }
            cache.insert(
                session,
                Cached {
                    state,
                    at: now,
                    user: principal.user_id(),
                    tenant: principal.tenant_id(),
                },
            );
        }
        Ok(state)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Cached>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl SessionCheck for crate::RefreshSessions<crate::MemorySessionStore> {
    fn check<'a>(&'a self, principal: &'a Principal) -> CheckFuture<'a, SessionState> {
        Box::pin(async move {
            Ok(if self.is_over(principal.session_id()).await? {
                SessionState::Over
            } else {
                SessionState::Live { role: None }
            })
        })
    }
}
