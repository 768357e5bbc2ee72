//! Storage of login sessions and refresh-token hashes. The rotation rules live in
//! tenantkit-auth; this is only the durable, atomic part.

use time::OffsetDateTime;

use crate::db::Mode;
use crate::scope::with_conn;
use crate::{Database, RefreshTokenRecord, Result, SessionId, SessionRecord, UserId};

const SESSION_COLUMNS: &str =
    "s.id, s.user_id, s.tenant_id, s.created_at, s.last_used_at, s.expires_at, s.revoked_at";

impl Database {
    /// Stores a new session and the hash of its first refresh token, atomically.
    ///
    /// # Errors
    /// [`crate::Error::Database`] on failure.
    pub async fn create_session(&self, session: &SessionRecord, token_hash: &[u8]) -> Result<()> {
        let mut conn = self.begin_global(Mode::ReadWrite).await?;
        with_conn!(&mut conn, |c| {
            sqlx::query(
                "INSERT INTO sessions (id, user_id, tenant_id, created_at, last_used_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(session.id)
            .bind(session.user_id)
            .bind(session.tenant_id)
            .bind(session.created_at)
            .bind(session.last_used_at)
            .bind(session.expires_at)
            .execute(&mut *c)
            .await?;
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, session_id, generation, created_at) \
                 VALUES ($1, $2, 1, $3)",
            )
            .bind(token_hash)
            .bind(session.id)
            .bind(session.created_at)
            .execute(&mut *c)
            .await
            .map(drop)
        })?;
        conn.commit().await
    }

    /// The refresh token with this hash and its session.
    ///
    /// # Errors
    /// [`crate::Error::Database`] on failure.
    pub async fn find_refresh_token(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<(RefreshTokenRecord, SessionRecord)>> {
        let sql = format!(
            "SELECT t.session_id, t.generation, t.created_at AS token_created_at, t.rotated_at, \
             {SESSION_COLUMNS} FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
             WHERE t.token_hash = $1"
        );
        let mut conn = self.begin_global(Mode::ReadOnly).await?;
        let row: Option<JoinedRow> = with_conn!(&mut conn, |c| {
            sqlx::query_as(&sql)
                .bind(token_hash)
                .fetch_optional(c)
                .await
        })?;
        Ok(row.map(JoinedRow::split))
    }

    /// Marks the token rotated and stores its successor, if and only if no one rotated it
    /// before; `false` means another request did (the caller decides what that means).
    ///
    /// # Errors
    /// [`crate::Error::Database`] on failure.
    pub async fn rotate_refresh_token(
        &self,
        token_hash: &[u8],
        successor_hash: &[u8],
        at: OffsetDateTime,
    ) -> Result<bool> {
        let mut conn = self.begin_global(Mode::ReadWrite).await?;
        let rotated = with_conn!(&mut conn, |c| {
            // The `rotated_at IS NULL` guard makes this the single winner among concurrent
            // refreshes (PostgreSQL re-checks it after waiting for the row lock; SQLite runs
            // writers one at a time).
            let won = sqlx::query_as::<_, (sqlx::types::Uuid, i64)>(
                "UPDATE refresh_tokens SET rotated_at = $1 WHERE token_hash = $2 AND rotated_at IS NULL \
                 AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = refresh_tokens.session_id \
                                 AND s.revoked_at IS NOT NULL) \
                 RETURNING session_id, generation",
            )
            .bind(at)
            .bind(token_hash)
            .fetch_optional(&mut *c)
            .await?;
            match won {
                Some((session, generation)) => {
                    sqlx::query(
                        "INSERT INTO refresh_tokens (token_hash, session_id, generation, created_at) \
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(successor_hash)
                    .bind(session)
                    .bind(generation + 1)
                    .bind(at)
                    .execute(&mut *c)
                    .await?;
                    sqlx::query("UPDATE sessions SET last_used_at = $1 WHERE id = $2")
                        .bind(at)
                        .bind(session)
                        .execute(&mut *c)
                        .await
                        .map(|_| true)
                }
                None => Ok(false),
            }
        })?;
        conn.commit().await?;
        Ok(rotated)
    }

    /// A session by id.
    ///
    /// # Errors
    /// [`crate::Error::Database`] on failure.
    pub async fn find_session(&self, id: SessionId) -> Result<Option<SessionRecord>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.id = $1");
        let mut conn = self.begin_global(Mode::ReadOnly).await?;
        Ok(with_conn!(&mut conn, |c| {
            sqlx::query_as(&sql).bind(id).fetch_optional(c).await
        })?)
    }

    /// Whether a session is over: revoked, expired or unknown (for strict access-token
    /// checks).
    ///
    /// # Errors
    /// [`crate::Error::Database`] on failure.
    pub async fn session_is_over(&self, id: SessionId, now: OffsetDateTime) -> Result<bool> {
        let mut conn = self.begin_global(Mode::ReadOnly).await?;
        let row: Option<(Option<OffsetDateTime>, OffsetDateTime)> = with_conn!(&mut conn, |c| {
            sqlx::query_as("SELECT revoked_at, expires_at FROM sessions WHERE id = $1")
                .bind(id)
                .fetch_optional(c)
                .await
        })?;
        Ok(match row {
            Some((revoked_at, expires_at)) => revoked_at.is_some() || expires_at <= now,
            None => true,
        })
    }

    /// Revokes one session (logout, or a detected refresh-token reuse).
    ///
    /// # Errors
    /// [`crate::Error::Database`] on failure.
    pub async fn revoke_session(
        &self,
        id: SessionId,
        at: OffsetDateTime,
        reason: &str,
    ) -> Result<()> {
        let mut conn = self.begin_global(Mode::ReadWrite).await?;
        with_conn!(&mut conn, |c| {
            sqlx::query(
                "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE id = $3 AND revoked_at IS NULL",
            )
            .bind(at)
            .bind(reason)
            .bind(id)
            .execute(c)
            .await
            .map(drop)
        })?;
        conn.commit().await
    }

    /// Revokes every live session of a user in one tenant (demoted or removed there).
    ///
    /// # Errors
    /// [`crate::Error::Database`] on failure.
    pub async fn revoke_user_sessions_in_tenant(
        &self,
        user: UserId,
        tenant: crate::TenantId,
        at: OffsetDateTime,
        reason: &str,
    ) -> Result<u64> {
        self.revoke_sessions(user, Some(tenant), None, at, reason)
            .await
    }

    /// Revokes every live session of a user except `keep` (logout everywhere, password
    /// change); returns how many were revoked.
    ///
    /// # Errors
    /// [`crate::Error::Database`] on failure.
    pub async fn revoke_user_sessions(
        &self,
        user: UserId,
        keep: Option<SessionId>,
        at: OffsetDateTime,
        reason: &str,
    ) -> Result<u64> {
        self.revoke_sessions(user, None, keep, at, reason).await
    }

    /// Revokes a user's live sessions, in one tenant or all, except `keep`.
    async fn revoke_sessions(
        &self,
        user: UserId,
        tenant: Option<crate::TenantId>,
        keep: Option<SessionId>,
        at: OffsetDateTime,
        reason: &str,
    ) -> Result<u64> {
        let mut conn = self.begin_global(Mode::ReadWrite).await?;
        let revoked = with_conn!(&mut conn, |c| {
            sqlx::query(
                "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
                 WHERE user_id = $3 AND revoked_at IS NULL \
                 AND ($4 IS NULL OR tenant_id = $4) AND ($5 IS NULL OR id <> $5)",
            )
            .bind(at)
            .bind(reason)
            .bind(user)
            .bind(tenant)
            .bind(keep)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
        })?;
        conn.commit().await?;
        Ok(revoked)
    }
}

#[derive(sqlx::FromRow)]
struct JoinedRow {
    session_id: SessionId,
    generation: i64,
    token_created_at: OffsetDateTime,
    rotated_at: Option<OffsetDateTime>,
    #[sqlx(flatten)]
    session: SessionRecord,
}

impl JoinedRow {
    fn split(self) -> (RefreshTokenRecord, SessionRecord) {
        let token = RefreshTokenRecord {
            session_id: self.session_id,
            generation: self.generation,
            created_at: self.token_created_at,
            rotated_at: self.rotated_at,
        };
        (token, self.session)
    }
}
