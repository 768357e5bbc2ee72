//! Single-use, expiring, hashed tokens mailed to users (password reset, email verification):
//! the `user_tokens` table of this crate's migrations.

use tenantkit_core::{Database, Result, SystemTx, UserId, with_conn};
use time::OffsetDateTime;

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

/// Stores the hash of a new mailed token. Earlier unused tokens of the same purpose are
/// invalidated: only the newest link works.
pub(crate) async fn store(
    db: &Database,
    user: UserId,
    purpose: TokenPurpose,
    token_hash: &[u8],
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
) -> Result<()> {
    let mut tx = db.begin_system().await?;
    with_conn!(&mut tx, |c| {
        sqlx::query(
            "UPDATE user_tokens SET used_at = $1 \
             WHERE user_id = $2 AND purpose = $3 AND used_at IS NULL",
        )
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
    tx.commit().await
}

/// The user of an open (unused, unexpired) mailed token of `purpose`, without using it: a cheap
/// check before expensive work.
pub(crate) async fn open(
    db: &Database,
    token_hash: &[u8],
    purpose: TokenPurpose,
    now: OffsetDateTime,
) -> Result<Option<UserId>> {
    let mut tx = db.begin_system_read().await?;
    Ok(with_conn!(&mut tx, |c| {
        sqlx::query_scalar(
            "SELECT user_id FROM user_tokens \
             WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
        )
        .bind(token_hash)
        .bind(purpose.as_str())
        .bind(now)
        .fetch_optional(c)
        .await
    })?)
}

/// Uses a mailed token in `tx`: marks it used if it exists, has this purpose, is unused and
/// unexpired, and returns its user. Any other case is `Ok(None)`. Atomic: of concurrent uses
/// exactly one gets the user.
pub(crate) async fn consume(
    tx: &mut SystemTx,
    token_hash: &[u8],
    purpose: TokenPurpose,
    now: OffsetDateTime,
) -> Result<Option<UserId>> {
    Ok(with_conn!(tx, |c| {
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
    })?)
}
