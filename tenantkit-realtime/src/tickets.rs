//! Single-use connection tickets: a browser cannot set `Authorization` on a WebSocket, and a
//! long-lived token must never travel in a URL (logs, history, referrers). The client trades
//! its access token for a ticket (`POST /v1/realtime/ticket`), which is good for one
//! connection within 30 seconds; the database keeps only its SHA-256, so any instance can
//! redeem it, and only once.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand_core::{OsRng, RngCore};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tenantkit_core::{Database, Principal, Role, SessionId, TenantId, UserId, with_conn};
use time::OffsetDateTime;

use crate::Result;

/// What a ticket starts with (so a leaked one is recognisable in a scanner).
pub const TICKET_PREFIX: &str = "rt_";

/// A new ticket, as `POST /v1/realtime/ticket` answers it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ticket {
    /// The ticket: `?ticket=<this>` on the WebSocket URL, once.
    pub ticket: String,
    /// Seconds it stays valid.
    pub expires_in: u64,
}

/// Issues and redeems tickets in tenantkit-core's database (table `realtime_tickets`, see
/// [`crate::migrations`]).
#[derive(Debug, Clone)]
pub struct Tickets {
    db: Database,
    ttl: Duration,
}

fn hash(ticket: &str) -> [u8; 32] {
    Sha256::digest(ticket.as_bytes()).into()
}

fn millis(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[derive(sqlx::FromRow)]
struct Row {
    tenant_id: TenantId,
    user_id: UserId,
    session_id: SessionId,
    role: String,
    scopes: String,
    amr: String,
    token_expires_ms: Option<i64>,
    live: bool,
}

impl Tickets {
    /// How long a ticket is good for by default.
    pub const TTL: Duration = Duration::from_secs(30);

    /// Tickets stored in `db`, valid for [`Tickets::TTL`].
    pub fn new(db: Database) -> Self {
        Self { db, ttl: Self::TTL }
    }

    /// Tickets valid for `ttl` instead (at least a second).
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// A new ticket standing for `principal` (verified by the caller, e.g. by the bearer
    /// layer of the ticket route). The connection it opens ends when the principal's access
    /// token would have expired.
    ///
    /// # Errors
    /// Database errors.
    pub async fn issue(&self, principal: &Principal) -> Result<Ticket> {
        let mut secret = [0_u8; 32];
        OsRng.fill_bytes(&mut secret);
        let ticket = format!("{TICKET_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
        let now = tenantkit_core::now();
        let expires = now + self.ttl;
        let scopes: Vec<&str> = principal.scopes().collect();
        let scopes = serde_json::to_string(&scopes).unwrap_or_else(|_| "[]".into());
        let amr = serde_json::to_string(principal.amr()).unwrap_or_else(|_| "[]".into());
        let mut tx = self.db.begin_system().await?;
        with_conn!(&mut tx, |c| {
            sqlx::query(
                "INSERT INTO realtime_tickets (ticket_hash, tenant_id, user_id, session_id, role, \
                 scopes, amr, token_expires_ms, expires_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&hash(&ticket)[..])
            .bind(principal.tenant_id())
            .bind(principal.user_id())
            .bind(principal.session_id())
            .bind(principal.role().as_str())
            .bind(&scopes)
            .bind(&amr)
            .bind(principal.expires_at().map(millis))
            .bind(millis(expires))
            .execute(c)
            .await
            .map(|_| ())
        })
        .map_err(tenantkit_core::Error::from)?;
        tx.commit().await?;
        Ok(Ticket {
            ticket,
            expires_in: self.ttl.as_secs(),
        })
    }

    /// Uses `ticket`: the caller it stands for, if it exists and has not expired; it is gone
    /// afterwards. Of concurrent redemptions exactly one succeeds. Anything else (unknown,
    /// used, expired, malformed) is `Ok(None)`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn redeem(&self, ticket: &str) -> Result<Option<Principal>> {
        if !ticket.starts_with(TICKET_PREFIX) || ticket.len() > 100 {
            return Ok(None);
        }
        let now = millis(tenantkit_core::now());
        let mut tx = self.db.begin_system().await?;
        let row: Option<Row> = with_conn!(&mut tx, |c| {
            sqlx::query_as(
                "DELETE FROM realtime_tickets WHERE ticket_hash = $1 \
                 RETURNING tenant_id, user_id, session_id, role, scopes, amr, token_expires_ms, \
                 expires_ms > $2 AS live",
            )
            .bind(&hash(ticket)[..])
            .bind(now)
            .fetch_optional(c)
            .await
        })
        .map_err(tenantkit_core::Error::from)?;
        tx.commit().await?;
        // An expired ticket is deleted all the same: it was single-use either way.
        let Some(row) = row.filter(|row| row.live) else {
            return Ok(None);
        };
        Ok(row.into_principal())
    }

    /// Deletes expired tickets; how many.
    ///
    /// # Errors
    /// Database errors.
    pub async fn prune(&self) -> Result<u64> {
        let now = millis(tenantkit_core::now());
        let mut tx = self.db.begin_system().await?;
        let done = with_conn!(&mut tx, |c| {
            sqlx::query("DELETE FROM realtime_tickets WHERE expires_ms <= $1")
                .bind(now)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })
        .map_err(tenantkit_core::Error::from)?;
        tx.commit().await?;
        Ok(done)
    }
}

impl Row {
    fn into_principal(self) -> Option<Principal> {
        let role: Role = self.role.parse().ok()?;
        let scopes: Vec<String> = serde_json::from_str(&self.scopes).ok()?;
        let amr: Vec<String> = serde_json::from_str(&self.amr).ok()?;
        let mut principal =
            Principal::new(self.user_id, self.tenant_id, role, scopes, self.session_id)
                .with_amr(amr);
        if let Some(ms) = self.token_expires_ms {
            let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
            principal = principal.with_expires_at(at);
        }
        Some(principal)
    }
}
