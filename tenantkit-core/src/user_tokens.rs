//! Single-use, expiring, hashed tokens mailed to users (password reset, email verification).

use time::OffsetDateTime;

use crate::db::Mode;
use crate::scope::with_conn;
use crate::{Database, Error, Result, UserId};

/// What a mailed token is for; a token only ever works for its own purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    /// Choosing a new password without the old one.
    PasswordReset,
    /// Proving the account owns its email address.
    EmailVerification,
}

impl TokenPurpose {
    const fn as_str(self) -> &'static str {
        match self {
            TokenPurpose::PasswordReset => "password_reset",
            TokenPurpose::EmailVerification => "email_verification",
        }
    }
}

impl Database {
    /// Stores the hash of a new mailed token. Earlier unused tokens of the same purpose are
    /// invalidated: only the newest link works.
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    pub async fn create_user_token(
        &self,
        user: UserId,
        purpose: TokenPurpose,
        token_hash: &[u8],
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<()> {
        let mut conn = self.begin_global(Mode::ReadWrite).await?;
        with_conn!(&mut conn, |c| {
            sqlx::query("UPDATE user_tokens SET used_at = $1 WHERE user_id = $2 AND purpose = $3 AND used_at IS NULL")
                .bind(now)
                .bind(user)
                .bind(purpose.as_str())
                .execute(&mut *c)
                .await?;
            sqlx::query(
                "INSERT INTO user_tokens (token_hash, user_id, purpose, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(token_hash)
            .bind(user)
            .bind(purpose.as_str())
            .bind(now)
            .bind(expires_at)
            .execute(&mut *c)
            .await
            .map(drop)
        })?;
        conn.commit().await
    }

    /// Uses a mailed token: atomically marks it used if it exists, has this purpose, is
    /// unused and unexpired, and returns its user. Any other case is `Ok(None)`.
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    pub async fn consume_user_token(
        &self,
        token_hash: &[u8],
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Result<Option<UserId>> {
        let mut conn = self.begin_global(Mode::ReadWrite).await?;
        let user: Option<UserId> = with_conn!(&mut conn, |c| {
            sqlx::query_scalar(
                "UPDATE user_tokens SET used_at = $1 \
                 WHERE token_hash = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1 \
                 RETURNING user_id",
            )
            .bind(now)
            .bind(token_hash)
            .bind(purpose.as_str())
            .fetch_optional(c)
            .await
        })?;
        conn.commit().await?;
        Ok(user)
    }

    /// Records that the user proved their email address.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the user does not exist.
    pub async fn mark_email_verified(&self, user: UserId, at: OffsetDateTime) -> Result<()> {
        let mut conn = self.begin_global(Mode::ReadWrite).await?;
        let updated = with_conn!(&mut conn, |c| {
            sqlx::query("UPDATE users SET email_verified_at = COALESCE(email_verified_at, $1) WHERE id = $2")
                .bind(at)
                .bind(user)
                .execute(c)
                .await
                .map(|done| done.rows_affected())
        })?;
        conn.commit().await?;
        if updated == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }
}
