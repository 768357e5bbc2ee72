//! Strict mode: access tokens of revoked sessions are refused before they expire.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tenantkit_core::SessionId;

use crate::Result;

/// The future of a [`SessionRevocation`] check.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<bool>> + Send + 'a>>;

/// Answers whether a session is over (revoked, expired or unknown).
pub trait SessionRevocation: fmt::Debug + Send + Sync + 'static {
    /// `true` when the session's access tokens must no longer be accepted.
    fn is_over(&self, session: SessionId) -> CheckFuture<'_>;
}

/// A [`SessionRevocation`] with a short-lived cache in front, so strict mode costs one lookup
/// per session per `ttl` rather than one per request. A revocation therefore takes effect
/// within `ttl` (5 seconds by default), not after the token's full 15 minutes.
#[derive(Clone)]
pub struct CachedRevocation {
    inner: Arc<dyn SessionRevocation>,
    ttl: Duration,
    capacity: usize,
    cache: Arc<Mutex<HashMap<SessionId, (bool, Instant)>>>,
}

impl fmt::Debug for CachedRevocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedRevocation")
            .field("inner", &self.inner)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl CachedRevocation {
    /// Caches answers of `inner` for 5 seconds, for at most 100,000 sessions.
    pub fn new(inner: Arc<dyn SessionRevocation>) -> Self {
        Self::with_ttl(inner, Duration::from_secs(5))
    }

    /// Caches answers for `ttl` (zero: no caching).
    pub fn with_ttl(inner: Arc<dyn SessionRevocation>, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            capacity: 100_000,
            cache: Arc::default(),
        }
    }

    /// Whether `session` is over, from the cache when fresh.
    ///
    /// # Errors
    /// The underlying store's errors.
    pub async fn is_over(&self, session: SessionId) -> Result<bool> {
        let now = Instant::now();
        if let Some((over, at)) = self.lock().get(&session).copied()
            && now.duration_since(at) < self.ttl
        {
            return Ok(over);
        }
        let over = self.inner.is_over(session).await?;
        if !self.ttl.is_zero() {
            let mut cache = self.lock();
            if cache.len() >= self.capacity {
                // Bounded memory: drop stale entries, and everything if that is not enough.
                cache.retain(|_, (_, at)| now.duration_since(*at) < self.ttl);
                if cache.len() >= self.capacity {
                    cache.clear();
                }
            }
            cache.insert(session, (over, now));
        }
        Ok(over)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, (bool, Instant)>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<S: crate::SessionStore> SessionRevocation for crate::RefreshSessions<S> {
    fn is_over(&self, session: SessionId) -> CheckFuture<'_> {
        Box::pin(async move { crate::RefreshSessions::is_over(self, session).await })
    }
}
