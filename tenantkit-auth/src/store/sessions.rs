//! [`SessionStore`] on tenantkit-core's database: the `sessions` and `refresh_tokens` tables of
//! this crate's migrations, on SQLite or PostgreSQL with one SQL text.
//!
//! A refresh token is looked up by its hash before its tenant is known, so these statements
//! run in system transactions; on PostgreSQL `sessions` is a tenant table whose migration
//! allows system access, so tenant-scoped work still sees only its own tenant's sessions.

use tenantkit_core::{
    Backend, Database, Principal, Role, SessionId, SystemTx, TenantId, TenantScope, Transaction,
    UserId, with_conn,
};
use time::OffsetDateTime;

use crate::refresh::{RefreshTokenRecord, SessionRecord, SessionStore};
use crate::{Result, RevocationScope};

const SESSION_COLUMNS: &str = "s.id, s.user_id, s.tenant_id, s.created_at, s.last_used_at, \
                               s.expires_at, s.revoked_at, s.credentials_epoch, s.amr";

/// The session's columns besides its id and `last_used_at`, which SQLite's `RETURNING` of an
/// update of `refresh_tokens` reaches through one scalar subquery each, by primary key.
/// A rotation never changes `amr`: the successor token belongs to the same session row, so
/// the session answered (and every access token issued from it) keeps the sign-in's methods.
const SESSION_OTHER_COLUMNS: [&str; 7] = [
    "user_id",
    "tenant_id",
    "created_at",
    "expires_at",
    "revoked_at",
    "credentials_epoch",
    "amr",
];

/// The token is unrotated (the guard that makes one winner among concurrent refreshes:
/// PostgreSQL re-checks it after waiting for the row lock, SQLite runs writers one at a time)
/// and its session live: not revoked, same credentials epoch as its user, not expired, not
/// idle. `$1` is the rotation's instant, `$2` the token's hash, `$3` the idle cut-off.
const LIVE: &str = "WHERE token_hash = $2 AND rotated_at IS NULL \
     AND EXISTS (SELECT 1 FROM sessions s JOIN users u ON u.id = s.user_id \
                 WHERE s.id = refresh_tokens.session_id AND s.revoked_at IS NULL \
                 AND s.credentials_epoch = u.credentials_epoch \
                 AND s.expires_at > $1 AND s.last_used_at > $3)";

/// SQLite's live rotation, one statement: marking the token rotated with its successor's
/// hash (`$4`) makes the trigger of migration 2005 insert the successor and touch the session.
/// The session's `last_used_at` is the rotation's own instant.
static SQLITE_ROTATE_LIVE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let others: Vec<String> = SESSION_OTHER_COLUMNS
        .iter()
        .map(|column| {
            format!(
                "(SELECT {column} FROM sessions WHERE id = refresh_tokens.session_id) AS {column}"
            )
        })
        .collect();
    format!(
        "UPDATE refresh_tokens SET rotated_at = $1, successor_hash = $4 {LIVE} \
         RETURNING session_id AS id, rotated_at AS last_used_at, {}",
        others.join(", ")
    )
});

/// PostgreSQL's live rotation, one statement: the rotation, the successor (`$4`) and the
/// session's touch as data-modifying CTEs.
static POSTGRES_ROTATE_LIVE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH won AS (UPDATE refresh_tokens SET rotated_at = $1 {LIVE} \
            RETURNING session_id, generation), \
         successor AS (INSERT INTO refresh_tokens \
            (token_hash, session_id, generation, created_at) \
            SELECT $4, session_id, generation + 1, $1 FROM won) \
         UPDATE sessions s SET last_used_at = $1 FROM won \
         WHERE s.id = won.session_id RETURNING {SESSION_COLUMNS}"
    )
});

impl SessionStore for Database {
    async fn create(&self, session: &SessionRecord, token_hash: &[u8]) -> Result<bool> {
        let mut tx = self.begin_system().await?;
        let created = with_conn!(&mut tx, |c| {
            // Only while the user's credentials epoch is still the one the login read: a
            // password reset during a slow login leaves no session behind.
            let created = sqlx::query(
                "INSERT INTO sessions (id, user_id, tenant_id, created_at, last_used_at, \
                 expires_at, credentials_epoch, amr) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE EXISTS \
                 (SELECT 1 FROM users u WHERE u.id = $2 AND u.credentials_epoch = $7)",
            )
            .bind(session.id)
            .bind(session.user_id)
            .bind(session.tenant_id)
            .bind(session.created_at)
            .bind(session.last_used_at)
            .bind(session.expires_at)
            .bind(session.credentials_epoch)
            .bind(session.amr.to_column())
            .execute(&mut *c)
            .await?
            .rows_affected();
            if created == 0 {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, session_id, generation, created_at) \
                 VALUES ($1, $2, 1, $3)",
            )
            .bind(token_hash)
            .bind(session.id)
            .bind(session.created_at)
            .execute(&mut *c)
            .await
            .map(|_| true)
        })?;
        tx.commit().await?;
        Ok(created)
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
            // And only for a live session: not revoked, its user's epoch unchanged.
            let won = sqlx::query_as::<_, (SessionId, i64)>(
                "UPDATE refresh_tokens SET rotated_at = $1 WHERE token_hash = $2 AND rotated_at IS NULL \
                 AND NOT EXISTS (SELECT 1 FROM sessions s JOIN users u ON u.id = s.user_id \
                                 WHERE s.id = refresh_tokens.session_id \
                                 AND (s.revoked_at IS NOT NULL \
                                      OR s.credentials_epoch <> u.credentials_epoch)) \
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

    async fn rotate_live(
        &self,
        token_hash: &[u8],
        successor_hash: &[u8],
        at: OffsetDateTime,
        idle_since: OffsetDateTime,
    ) -> Result<Option<SessionRecord>> {
        // SQLite: one statement in autocommit mode on the single writer. PostgreSQL: one
        // statement in a transaction (its row-level-security settings are transaction-local).
        let (sql, mut tx) = match self.backend() {
            Backend::Sqlite => (&*SQLITE_ROTATE_LIVE, self.begin_system_statement().await?),
            _ => (&*POSTGRES_ROTATE_LIVE, self.begin_system().await?),
        };
        // `fetch_all`, not `fetch_optional`: in autocommit mode the statement commits when it
        // runs to its end, and only a statement run to its end reports a failed commit (sqlx
        // ignores errors of a statement stopped after one row).
        let sessions: Vec<SessionRecord> = with_conn!(&mut tx, |c| {
            sqlx::query_as(sql.as_str())
                .bind(at)
                .bind(token_hash)
                .bind(idle_since)
                .bind(successor_hash)
                .fetch_all(c)
                .await
        })?;
        let session = sessions.into_iter().next();
        if session.is_some() {
            tx.commit().await?;
        }
        Ok(session)
    }

    async fn revoke(&self, session: SessionId, at: OffsetDateTime, reason: &str) -> Result<()> {
        let mut tx = self.begin_system().await?;
        revoke_rows(&mut tx, RevocationScope::Session(session), at, reason).await?;
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
        let scope = RevocationScope::User {
            user,
            tenant,
            except: keep,
        };
        let revoked = revoke_rows(&mut tx, scope, at, reason).await?;
        tx.commit().await?;
        Ok(revoked.len() as u64)
    }

    async fn session(&self, id: SessionId) -> Result<Option<SessionRecord>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.id = $1");
        let mut tx = self.begin_system_read().await?;
        Ok(with_conn!(&mut tx, |c| {
            sqlx::query_as(&sql).bind(id).fetch_optional(c).await
        })?)
    }
}

/// The one statement that revokes sessions: the live sessions in `scope`, inside `tx`;
/// returns their ids. Every revocation writes through here ([`crate::Revocations`] and this
/// store's [`SessionStore`] methods).
pub(crate) async fn revoke_rows<T: Transaction>(
    tx: &mut T,
    scope: RevocationScope,
    at: OffsetDateTime,
    reason: &str,
) -> tenantkit_core::Result<Vec<SessionId>> {
    let (session, user, tenant, except) = match scope {
        RevocationScope::Session(id) => (Some(id), None, None, None),
        RevocationScope::User {
            user,
            tenant,
            except,
        } => (None, Some(user), tenant, except),
        RevocationScope::Tenant(tenant) => (None, None, Some(tenant), None),
        // A bus's notice, never a revocation: written, it would end every session.
        RevocationScope::Missed => {
            return Err(tenantkit_core::Error::BadRequest(
                "RevocationScope::Missed is a notice, not a revocation".into(),
            ));
        }
    };
    Ok(with_conn!(tx, |c| {
        sqlx::query_scalar(
            "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
             WHERE revoked_at IS NULL AND ($3 IS NULL OR id = $3) \
             AND ($4 IS NULL OR user_id = $4) AND ($5 IS NULL OR tenant_id = $5) \
             AND ($6 IS NULL OR id <> $6) RETURNING id",
        )
        .bind(at)
        .bind(reason)
        .bind(session)
        .bind(user)
        .bind(tenant)
        .bind(except)
        .fetch_all(c)
        .await
    })?)
}

/// Stamps `session` with its user's new credentials epoch (the session that changed the
/// password stays signed in), inside `tx`.
pub(crate) async fn restamp(
    tx: &mut SystemTx,
    session: SessionId,
    epoch: i64,
) -> tenantkit_core::Result<()> {
    with_conn!(tx, |c| {
        sqlx::query("UPDATE sessions SET credentials_epoch = $1 WHERE id = $2")
            .bind(epoch)
            .bind(session)
            .execute(c)
            .await
            .map(drop)
    })?;
    Ok(())
}

/// What the session check reads of a session, in its tenant: the session, its user's current
/// epoch, and the user's current role there (`None`: no longer a member).
#[derive(sqlx::FromRow)]
struct CheckedRow {
    revoked_at: Option<OffsetDateTime>,
    expires_at: OffsetDateTime,
    last_used_at: OffsetDateTime,
    credentials_epoch: i64,
    user_epoch: i64,
    role: Option<String>,
}

/// The revocation-aware check of [`crate::StrictJwtAuthLayer`] over the database: the session
/// must be live (not revoked, not expired or idle, its user's credentials unchanged) and its
/// user still a member of the token's tenant, whose current role replaces the token's.
impl crate::SessionCheck for crate::RefreshSessions<Database> {
    fn check<'a>(
        &'a self,
        principal: &'a Principal,
    ) -> crate::CheckFuture<'a, crate::SessionState> {
        Box::pin(async move {
            // The tenant is the verified token's: its session and membership rows are read in
            // that tenant's own scope.
            let mut tx = self
                .store()
                .begin_read(&TenantScope::for_system(principal.tenant_id()))
                .await?;
            let row: Option<CheckedRow> = with_conn!(&mut tx, |c| {
                sqlx::query_as(
                    "SELECT s.revoked_at, s.expires_at, s.last_used_at, s.credentials_epoch, \
                     u.credentials_epoch AS user_epoch, m.role \
                     FROM sessions s JOIN users u ON u.id = s.user_id \
                     LEFT JOIN memberships m ON m.tenant_id = s.tenant_id AND m.user_id = s.user_id \
                     WHERE s.id = $1 AND s.tenant_id = $2 AND s.user_id = $3",
                )
                .bind(principal.session_id())
                .bind(principal.tenant_id())
                .bind(principal.user_id())
                .fetch_optional(c)
                .await
            })?;
            tx.commit().await?;
            let now = self.now();
            let live = row.and_then(|row| {
                let over = row.revoked_at.is_some()
                    || now >= row.expires_at
                    || now - row.last_used_at > self.config().idle
                    || row.credentials_epoch != row.user_epoch;
                let role = row.role.and_then(|role| role.parse::<Role>().ok())?;
                (!over).then_some(role)
            });
            Ok(match live {
                Some(role) => crate::SessionState::Live { role: Some(role) },
                None => crate::SessionState::Over,
            })
        })
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
