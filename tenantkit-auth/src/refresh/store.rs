//! Where sessions live: the `SessionStore` trait and its in-memory implementation.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Mutex;

use tenantkit_core::{SessionId, TenantId, UserId};
use time::OffsetDateTime;

use super::{RefreshTokenRecord, SessionRecord};
use crate::Result;

/// Durable storage of sessions and refresh-token hashes. Implementations must make
/// [`SessionStore::rotate`] atomic: among concurrent calls for one token exactly one returns
/// `true`.
///
/// tenantkit implements it for [`MemorySessionStore`] and, with the `sqlite` or `postgres`
/// feature, for [`tenantkit_core::Database`] (this crate's `sessions` and `refresh_tokens`
/// tables). A custom store (Redis, DynamoDB, ...) implements these operations with the same
/// guarantees.
pub trait SessionStore: fmt::Debug + Send + Sync + 'static {
    /// Stores a new session with the hash of its first refresh token, only if its user's
    /// credentials epoch is still the session's (`false` otherwise: the password changed, or
    /// every session was ended, while the login was in flight). Stores that know no users
    /// accept every session.
    fn create(
        &self,
        session: &SessionRecord,
        token_hash: &[u8],
    ) -> impl Future<Output = Result<bool>> + Send;

    /// The token with this hash and its session; `Ok(None)` when unknown.
    fn find(
        &self,
        token_hash: &[u8],
    ) -> impl Future<Output = Result<Option<(RefreshTokenRecord, SessionRecord)>>> + Send;

    /// Marks the token rotated and stores its successor, only if nobody did before and its
    /// session is live (not revoked, its user's credentials epoch unchanged).
    fn rotate(
        &self,
        token_hash: &[u8],
        successor_hash: &[u8],
        at: OffsetDateTime,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// The hot path of a refresh, in as few steps as the store can: if the token is known,
    /// unrotated and its session live (not revoked, its user's credentials epoch unchanged,
    /// not expired at `at`, used after `idle_since`), rotates it to `successor_hash`, touches
    /// the session and answers it (with `last_used_at = at`); otherwise `Ok(None)`, and the
    /// caller looks closer (replay, grace window, expiry). Atomic like
    /// [`SessionStore::rotate`]. The default is [`SessionStore::find`] then `rotate`; the
    /// database store does it in one statement on PostgreSQL and one transaction on SQLite.
    fn rotate_live(
        &self,
        token_hash: &[u8],
        successor_hash: &[u8],
        at: OffsetDateTime,
        idle_since: OffsetDateTime,
    ) -> impl Future<Output = Result<Option<SessionRecord>>> + Send {
        async move {
            let Some((token, mut session)) = self.find(token_hash).await? else {
                return Ok(None);
            };
            let live = token.rotated_at.is_none()
                && session.revoked_at.is_none()
                && at < session.expires_at
                && session.last_used_at > idle_since;
            if live && self.rotate(token_hash, successor_hash, at).await? {
                session.last_used_at = at;
                return Ok(Some(session));
            }
            Ok(None)
        }
    }

    /// Revokes one session.
    fn revoke(
        &self,
        session: SessionId,
        at: OffsetDateTime,
        reason: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Revokes every live session of a user (only those in `tenant`, if given) except
    /// `keep`; returns how many it revoked.
    fn revoke_user(
        &self,
        user: UserId,
        keep: Option<SessionId>,
        tenant: Option<TenantId>,
        at: OffsetDateTime,
        reason: &str,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// The session with this id; `Ok(None)` when unknown.
    fn session(&self, id: SessionId) -> impl Future<Output = Result<Option<SessionRecord>>> + Send;
}

/// Sessions in process memory: for tests, examples and single-process tools. Everything is
/// lost on restart.
#[derive(Debug, Default)]
pub struct MemorySessionStore {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    sessions: HashMap<SessionId, SessionRecord>,
    tokens: HashMap<Vec<u8>, RefreshTokenRecord>,
}

impl MemorySessionStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut MemoryState) -> T) -> T {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut state)
    }
}

impl SessionStore for MemorySessionStore {
    async fn create(&self, session: &SessionRecord, token_hash: &[u8]) -> Result<bool> {
        self.with(|state| {
            state.sessions.insert(session.id, session.clone());
            let token = RefreshTokenRecord {
                session_id: session.id,
                generation: 1,
                created_at: session.created_at,
                rotated_at: None,
            };
            state.tokens.insert(token_hash.to_vec(), token);
        });
        Ok(true)
    }

    async fn find(&self, token_hash: &[u8]) -> Result<Option<(RefreshTokenRecord, SessionRecord)>> {
        Ok(self.with(|state| {
            let token = state.tokens.get(token_hash)?.clone();
            let session = state.sessions.get(&token.session_id)?.clone();
            Some((token, session))
        }))
    }

    async fn rotate(
        &self,
        token_hash: &[u8],
        successor_hash: &[u8],
        at: OffsetDateTime,
    ) -> Result<bool> {
        Ok(self.with(|state| {
            let Some(token) = state.tokens.get_mut(token_hash) else {
                return false;
            };
            if token.rotated_at.is_some() {
                return false;
            }
            token.rotated_at = Some(at);
            let successor = RefreshTokenRecord {
                session_id: token.session_id,
                generation: token.generation + 1,
                created_at: at,
                rotated_at: None,
            };
            if let Some(session) = state.sessions.get_mut(&successor.session_id) {
                session.last_used_at = at;
            }
            state.tokens.insert(successor_hash.to_vec(), successor);
            true
        }))
    }

    async fn revoke(&self, session: SessionId, at: OffsetDateTime, _reason: &str) -> Result<()> {
        self.with(|state| {
            if let Some(session) = state.sessions.get_mut(&session) {
                session.revoked_at.get_or_insert(at);
            }
        });
        Ok(())
    }

    async fn revoke_user(
        &self,
        user: UserId,
        keep: Option<SessionId>,
        tenant: Option<TenantId>,
        at: OffsetDateTime,
        _reason: &str,
    ) -> Result<u64> {
        Ok(self.with(|state| {
            let mut revoked = 0;
            for session in state.sessions.values_mut().filter(|s| {
                s.user_id == user
                    && s.revoked_at.is_none()
                    && Some(s.id) != keep
                    && tenant.is_none_or(|t| s.tenant_id == t)
            }) {
                session.revoked_at = Some(at);
                revoked += 1;
            }
            revoked
        }))
    }

    async fn session(&self, id: SessionId) -> Result<Option<SessionRecord>> {
        Ok(self.with(|state| state.sessions.get(&id).cloned()))
    }
}
