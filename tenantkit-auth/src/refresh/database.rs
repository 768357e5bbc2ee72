//! `SessionStore` on tenantkit-core's database (SQLite or PostgreSQL).

use tenantkit_core::{Database, RefreshTokenRecord, SessionId, SessionRecord, UserId};
use time::OffsetDateTime;

use super::SessionStore;
use crate::Result;

impl SessionStore for Database {
    async fn create(&self, session: &SessionRecord, token_hash: &[u8]) -> Result<()> {
        Ok(self.create_session(session, token_hash).await?)
    }

    async fn find(&self, token_hash: &[u8]) -> Result<Option<(RefreshTokenRecord, SessionRecord)>> {
        Ok(self.find_refresh_token(token_hash).await?)
    }

    async fn rotate(
        &self,
        token_hash: &[u8],
        successor_hash: &[u8],
        at: OffsetDateTime,
    ) -> Result<bool> {
        Ok(self
            .rotate_refresh_token(token_hash, successor_hash, at)
            .await?)
    }

    async fn revoke(&self, session: SessionId, at: OffsetDateTime, reason: &str) -> Result<()> {
        Ok(self.revoke_session(session, at, reason).await?)
    }

    async fn revoke_user(
        &self,
        user: UserId,
        keep: Option<SessionId>,
        at: OffsetDateTime,
        reason: &str,
    ) -> Result<u64> {
        Ok(self.revoke_user_sessions(user, keep, at, reason).await?)
    }
}
