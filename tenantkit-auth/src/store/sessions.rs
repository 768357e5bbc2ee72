//! [`SessionStore`] on tenantkit-core's database: the `sessions` and `refresh_tokens` tables of
//! this crate's migrations, on SQLite or PostgreSQL with one SQL text.
//!
//! A refresh token is looked up by its hash before its tenant is known, so these statements
//! run in system transactions; on PostgreSQL `sessions` is a tenant table whose migration
//! allows system access, so tenant-scoped work still sees only its own tenant's sessions.

use tenantkit_core::{Database, SessionId, TenantId, UserId, with_conn};
use time::OffsetDateTime;

use crate::Result;
use crate::refresh::{RefreshTokenRecord, SessionRecord, SessionStore};

const SESSION_COLUMNS: &str =
    "s.id, s.user_id, s.tenant_id, s.created_at, s.last_used_at, s.expires_at, s.revoked_at";

impl SessionStore for Database {
    async fn create(&self, session: &SessionRecord, token_hash: &[u8]) -> Result<()> {
        let mut tx = self.begin_system().await?;
        with_conn!(&mut tx, |c| {
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
        Ok(tx.commit().await?)
    }

    async fn find(&self, token_hash: &[u8]) -> Result<Option<(RefreshTokenRecord, SessionRecord)>> {
        let sql = format!(
            "SELECT t.session_id, t.generation, t.created_at AS token_created_at, t.rotated_at, \
             {SESSION_COLUMNS} FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
             WHERE t.token_hash = $1"
        );
        let mut tx = self.begin_system_read().await?;
        let row: Option<JoinedRow> = with_conn!(&mut tx, |c| {
            sqlx::query_as(&sql)
                .bind(token_hash)
                .fetch_optional(c)
                .await
        })?;
        Ok(row.map(JoinedRow::split))
    }

    async fn rotate(
        &self,
        token_hash: &[u8],
        successor_hash: &[u8],
        at: OffsetDateTime,
    ) -> Result<bool> {
        let mut tx = self.begin_system().await?;
        let rotated = with_conn!(&mut tx, |c| {
            // The `rotated_at IS NULL` guard makes this the single winner among concurrent
            // refreshes (PostgreSQL re-checks it after waiting for the row lock; SQLite runs
            // writers one at a time).
            let won = sqlx::query_as::<_, (SessionId, i64)>(
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
        tx.commit().await?;
        Ok(rotated)
    }

    async fn revoke(&self, session: SessionId, at: OffsetDateTime, reason: &str) -> Result<()> {
        let mut tx = self.begin_system().await?;
        with_conn!(&mut tx, |c| {
            sqlx::query(
                "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
                 WHERE id = $3 AND revoked_at IS NULL",
            )
            .bind(at)
            .bind(reason)
            .bind(session)
            .execute(c)
            .await
            .map(drop)
        })?;
        Ok(tx.commit().await?)
    }

    async fn revoke_user(
        &self,
        user: UserId,
        keep: Option<SessionId>,
        tenant: Option<TenantId>,
        at: OffsetDateTime,
        reason: &str,
    ) -> Result<u64> {
        let mut tx = self.begin_system().await?;
        let revoked = with_conn!(&mut tx, |c| {
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
        tx.commit().await?;
        Ok(revoked)
    }

    async fn session(&self, id: SessionId) -> Result<Option<SessionRecord>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.id = $1");
        let mut tx = self.begin_system_read().await?;
        Ok(with_conn!(&mut tx, |c| {
            sqlx::query_as(&sql).bind(id).fetch_optional(c).await
        })?)
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
