//! Rotating refresh tokens grouped in sessions, with reuse detection.

mod records;
mod store;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand_core::RngCore as _;
use sha2::{Digest, Sha256};
use tenantkit_core::{Clock, SessionId, SystemClock, TenantId, UserId};

pub use records::{AuthMethods, RefreshTokenRecord, SessionRecord};
pub use store::{MemorySessionStore, SessionStore};

use crate::{Error, Result};

/// An opaque refresh token: 256 random bits (or their keyed successor), base64url. Only its
/// SHA-256 is stored. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct RefreshToken(String);

impl RefreshToken {
    /// Wraps a token a client presented.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut bytes);
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The token text, to send to the client.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What is stored: SHA-256 of the token. (A fast hash suffices for 256-bit random input.)
    fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(..)")
    }
}

/// Lifetimes of sessions. `Default`: 5 s grace, 7 days idle, 30 days absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshConfig {
    /// How long after a rotation the old token still yields the same successor (for
    /// concurrent requests and lost responses), instead of counting as reuse.
    pub grace: Duration,
    /// A session unused for this long expires.
    pub idle: Duration,
    /// A session expires this long after login, however much it is used.
    pub absolute: Duration,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(5),
            idle: Duration::from_secs(7 * 24 * 3600),
            absolute: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Starts, rotates and revokes sessions. Cheap to clone.
pub struct RefreshSessions<S> {
    store: Arc<S>,
    secret: Arc<[u8]>,
    config: RefreshConfig,
    clock: Arc<dyn Clock>,
    revocations: crate::Revocations,
}

impl<S> Clone for RefreshSessions<S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            secret: self.secret.clone(),
            config: self.config.clone(),
            clock: self.clock.clone(),
            revocations: self.revocations.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for RefreshSessions<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshSessions")
            .field("store", &self.store)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

const REASON_REUSE: &str = "refresh_token_reused";

impl<S: SessionStore> RefreshSessions<S> {
    /// Sessions in `store`; `secret` (at least 32 bytes, kept across restarts) derives each
    /// token's successor.
    ///
    /// # Errors
    /// [`Error::Key`] for a short secret.
    pub fn new(store: S, secret: &[u8], config: RefreshConfig) -> Result<Self> {
        Self::with_clock(store, secret, config, Arc::new(SystemClock))
    }

    /// The same with an explicit clock (tests move it to check expiry).
    ///
    /// # Errors
    /// [`Error::Key`] for a short secret.
    pub fn with_clock(
        store: S,
        secret: &[u8],
        config: RefreshConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        if secret.len() < 32 {
            return Err(Error::Key(
                "the refresh secret must be at least 32 bytes".into(),
            ));
        }
        Ok(Self {
            store: Arc::new(store),
            secret: secret.into(),
            config,
            clock,
            revocations: crate::Revocations::in_process(),
        })
    }

    /// Publishes every revocation on `revocations` (by default an in-process bus of this
    /// instance's own; share one with [`crate::CachedSessionCheck::with_revocations`], or
    /// give a bus that reaches other instances).
    #[must_use]
    pub fn with_revocations(mut self, revocations: crate::Revocations) -> Self {
        self.revocations = revocations;
        self
    }

    /// Where revocations are written and published: every revocation of these sessions and
    /// of the flows over them goes through it.
    pub fn revocations(&self) -> &crate::Revocations {
        &self.revocations
    }

    /// Publishes a revocation the store has committed.
    fn published(&self, scope: crate::RevocationScope, sessions: Vec<SessionId>, reason: &str) {
        self.revocations.publish(crate::Revocation::new(
            scope,
            sessions,
            reason,
            self.clock.now(),
        ));
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The lifetimes.
    pub fn config(&self) -> &RefreshConfig {
        &self.config
    }

    /// The current time of this instance's clock.
    pub fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    /// Starts a session for `user` in `tenant` and returns its first token, with no
    /// authentication methods recorded (its tokens carry no `amr`); a sign-in uses
    /// [`RefreshSessions::start_signed_in`]. `credentials_epoch` is the user's epoch as read
    /// when the login began.
    ///
    /// # Errors
    /// [`Error::CredentialsChanged`] when the user's epoch moved on since (a password reset
    /// or "log out everywhere" while the login was in flight); storage errors.
    #[tracing::instrument(skip_all, fields(user = %user, tenant = %tenant))]
    pub async fn start(
        &self,
        user: UserId,
        tenant: TenantId,
        credentials_epoch: i64,
    ) -> Result<(SessionRecord, RefreshToken)> {
        self.start_session(
            user,
            tenant,
            credentials_epoch,
            None,
            AuthMethods::default(),
        )
        .await
    }

    /// Starts a session for a sign-in that authenticated with `amr` (for a password sign-in
    /// [`AuthMethods::password`]): every access token of the session, through every refresh,
    /// carries them.
    ///
    /// # Errors
    /// As [`RefreshSessions::start`].
    #[tracing::instrument(skip_all, fields(user = %user, tenant = %tenant))]
    pub async fn start_signed_in(
        &self,
        user: UserId,
        tenant: TenantId,
        credentials_epoch: i64,
        amr: AuthMethods,
    ) -> Result<(SessionRecord, RefreshToken)> {
        self.start_session(user, tenant, credentials_epoch, None, amr)
            .await
    }

    /// Starts a session derived from another one (a tenant switch): it ends no later than
    /// `not_after`, so chaining sessions never extends the absolute expiry of the first login.
    /// It records no authentication methods; [`RefreshSessions::start_derived`] keeps the
    /// parent's.
    ///
    /// # Errors
    /// As [`RefreshSessions::start`].
    pub async fn start_until(
        &self,
        user: UserId,
        tenant: TenantId,
        credentials_epoch: i64,
        not_after: Option<time::OffsetDateTime>,
    ) -> Result<(SessionRecord, RefreshToken)> {
        self.start_session(
            user,
            tenant,
            credentials_epoch,
            not_after,
            AuthMethods::default(),
        )
        .await
    }

    /// Starts a session in `tenant` derived from `parent` (a tenant switch): same user, same
    /// credentials epoch, the same authentication methods (the sign-in is the parent's; in
    /// another tenant without what the parent's tenant's identity provider vouched for, see
    /// [`AuthMethods::in_another_tenant`]), and ending no later than the parent.
    ///
    /// # Errors
    /// As [`RefreshSessions::start`].
    pub async fn start_derived(
        &self,
        parent: &SessionRecord,
        tenant: TenantId,
    ) -> Result<(SessionRecord, RefreshToken)> {
        self.start_session(
            parent.user_id,
            tenant,
            parent.credentials_epoch,
            Some(parent.expires_at),
            if tenant == parent.tenant_id {
                parent.amr.clone()
            } else {
                parent.amr.in_another_tenant()
            },
        )
        .await
    }

    async fn start_session(
        &self,
        user: UserId,
        tenant: TenantId,
        credentials_epoch: i64,
        not_after: Option<time::OffsetDateTime>,
        amr: AuthMethods,
    ) -> Result<(SessionRecord, RefreshToken)> {
        let now = self.clock.now();
        let absolute = now + self.config.absolute;
        let expires_at = not_after.map_or(absolute, |cap| cap.min(absolute));
        let session = SessionRecord::new(user, tenant, now, expires_at)
            .with_credentials_epoch(credentials_epoch)
            .with_amr(amr);
        let token = RefreshToken::generate();
        if !self.store.create(&session, &token.hash()).await? {
            return Err(Error::CredentialsChanged);
        }
        Ok((session, token))
    }

    /// Exchanges a refresh token for its successor.
    ///
    /// Within the grace window after a rotation the same successor is returned again (so
    /// concurrent refreshes never fork the session); after it, presenting a rotated token
    /// means it was stolen or replayed, and the whole session is revoked.
    ///
    /// # Errors
    /// [`Error::InvalidToken`] for an unknown, revoked or expired token;
    /// [`Error::RefreshTokenReused`] for a replay (the session is then revoked).
    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self, presented: &RefreshToken) -> Result<(SessionRecord, RefreshToken)> {
        let hash = presented.hash();
        let now = self.clock.now();
        let successor = self.successor(presented);
        // The common case in one step: a live, unrotated token.
        if let Some(session) = self
            .store
            .rotate_live(&hash, &successor.hash(), now, now - self.config.idle)
            .await?
        {
            return Ok((session, successor));
        }
        // Otherwise: unknown, ended, or already rotated (a concurrent twin, or a replay).
        let (token, session) = self
            .store
            .find(&hash)
            .await?
            .ok_or(Error::InvalidToken("unknown refresh token"))?;
        if session.revoked_at.is_some() {
            return Err(Error::InvalidToken("session revoked"));
        }
        if now >= session.expires_at || now - session.last_used_at > self.config.idle {
            return Err(Error::InvalidToken("session expired"));
        }
        let rotated_at = match token.rotated_at {
            Some(at) => at,
            None if self.store.rotate(&hash, &successor.hash(), now).await? => {
                return Ok((session, successor));
            }
            // Another request rotated it between our read and our write: it is now a
            // rotated token like any other.
            None => self
                .store
                .find(&hash)
                .await?
                .and_then(|(token, _)| token.rotated_at)
                .ok_or(Error::InvalidToken("refresh token vanished"))?,
        };
        // Inside the grace window the same successor is answered again, but only while that
        // successor is itself unrotated: a thief replaying an old token must not walk the chain
        // once the rightful client moved on.
        if now - rotated_at <= self.config.grace {
            let next_unrotated = self
                .store
                .find(&successor.hash())
                .await?
                .is_some_and(|(next, _)| next.rotated_at.is_none());
            if next_unrotated {
                return Ok((session, successor));
            }
        }
        // Reuse of a rotated token: someone holds a copy. Kill the whole family.
        self.store.revoke(session.id, now, REASON_REUSE).await?;
        self.published(
            crate::RevocationScope::Session(session.id),
            vec![session.id],
            REASON_REUSE,
        );
        tracing::warn!(session = %session.id, user = %session.user_id, "refresh token reuse detected; session revoked");
        Err(Error::RefreshTokenReused {
            session: session.id,
            user: session.user_id,
            tenant: session.tenant_id,
        })
    }

    /// Revokes the session of `presented` (logout). An unknown token is not an error: logout
    /// must not reveal which tokens exist.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn revoke(&self, presented: &RefreshToken) -> Result<Option<SessionRecord>> {
        match self.store.find(&presented.hash()).await? {
            Some((_, session)) => {
                self.store
                    .revoke(session.id, self.clock.now(), "logout")
                    .await?;
                self.published(
                    crate::RevocationScope::Session(session.id),
                    vec![session.id],
                    "logout",
                );
                Ok(Some(session))
            }
            None => Ok(None),
        }
    }

    /// Revokes every session of `user` (logout everywhere, password reset).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn revoke_user(&self, user: UserId, reason: &str) -> Result<u64> {
        let revoked = self
            .store
            .revoke_user(user, None, None, self.clock.now(), reason)
            .await?;
        let scope = crate::RevocationScope::User {
            user,
            tenant: None,
            except: None,
        };
        self.published(scope, Vec::new(), reason);
        Ok(revoked)
    }

    /// Revokes every session of `user` in `tenant` (demoted or removed there).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn revoke_user_in_tenant(
        &self,
        user: UserId,
        tenant: TenantId,
        reason: &str,
    ) -> Result<u64> {
        let revoked = self
            .store
            .revoke_user(user, None, Some(tenant), self.clock.now(), reason)
            .await?;
        let scope = crate::RevocationScope::User {
            user,
            tenant: Some(tenant),
            except: None,
        };
        self.published(scope, Vec::new(), reason);
        Ok(revoked)
    }

    /// Whether a session is over: revoked, expired (absolutely or idle) or unknown.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn is_over(&self, session: SessionId) -> Result<bool> {
        let now = self.clock.now();
        Ok(match self.store.session(session).await? {
            Some(s) => {
                s.revoked_at.is_some()
                    || now >= s.expires_at
                    || now - s.last_used_at > self.config.idle
            }
            None => true,
        })
    }

    /// The session with this id.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn session(&self, id: SessionId) -> Result<Option<SessionRecord>> {
        self.store.session(id).await
    }

    /// Revokes every session of `user` but `keep` (a password change keeps the session that
    /// made it).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn revoke_user_except(
        &self,
        user: UserId,
        keep: SessionId,
        reason: &str,
    ) -> Result<u64> {
        let revoked = self
            .store
            .revoke_user(user, Some(keep), None, self.clock.now(), reason)
            .await?;
        let scope = crate::RevocationScope::User {
            user,
            tenant: None,
            except: Some(keep),
        };
        self.published(scope, Vec::new(), reason);
        Ok(revoked)
    }

    /// The successor of a token: a keyed hash of it, so every request presenting the same
    /// token gets the same successor while only hashes are stored.
    fn successor(&self, parent: &RefreshToken) -> RefreshToken {
        // Any key length is valid for HMAC.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .expect("HMAC accepts any key length");
        mac.update(b"tenantkit refresh successor v1\0");
        mac.update(parent.expose().as_bytes());
        RefreshToken(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }
}
