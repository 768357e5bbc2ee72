//! The records of login sessions, shared by every session store.

use serde::Serialize;
use time::OffsetDateTime;

use tenantkit_core::{SessionId, TenantId, UserId};

/// A login session: one refresh-token family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct SessionRecord {
    /// The session id (the `sid` of its access tokens).
    pub id: SessionId,
    /// Who logged in.
    pub user_id: UserId,
    /// The tenant the session acts in.
    pub tenant_id: TenantId,
    /// When it began.
    pub created_at: OffsetDateTime,
    /// When a refresh last used it (idle expiry counts from here).
    pub last_used_at: OffsetDateTime,
    /// When it ends regardless of use (absolute expiry).
    pub expires_at: OffsetDateTime,
    /// When it was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
    /// Its user's credentials epoch when it was created: a session is only made while this is
    /// still the user's epoch, and stops refreshing once the epoch moves on.
    pub credentials_epoch: i64,
}

impl SessionRecord {
    /// A live session of `user` in `tenant`, begun and last used at `at`, ending at
    /// `expires_at` whatever its use.
    pub fn new(
        user_id: UserId,
        tenant_id: TenantId,
        at: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Self {
        Self {
            id: SessionId::new(),
            user_id,
            tenant_id,
            created_at: at,
            last_used_at: at,
            expires_at,
            revoked_at: None,
            credentials_epoch: 0,
        }
    }

    /// The same session, made under the user's credentials epoch `epoch`.
    pub fn with_credentials_epoch(mut self, epoch: i64) -> Self {
        self.credentials_epoch = epoch;
        self
    }
}

/// One refresh token of a session, known only by its hash.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RefreshTokenRecord {
    /// The session it belongs to.
    pub session_id: SessionId,
    /// 1 for the token issued at login, +1 per rotation.
    pub generation: i64,
    /// When it was issued.
    pub created_at: OffsetDateTime,
    /// When it was exchanged for its successor, if it was.
    pub rotated_at: Option<OffsetDateTime>,
}
