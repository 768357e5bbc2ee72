//! The security audit log: append-only, one row per security event, hash-chained per tenant.

use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::{AuditEntryId, Result, TenantId, TenantTx, UserId, now};

/// An event to record. `action` is dotted (`auth.login`, `project.created`); `details` must
/// never hold a secret (password, token, hash).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditEvent {
    /// Who acted (`None` for the system or an anonymous caller).
    pub actor_id: Option<UserId>,
    /// What happened.
    pub action: String,
    /// The kind of thing acted on (`user`, `session`, `project`).
    pub target_type: Option<String>,
    /// Its id.
    pub target_id: Option<String>,
    /// The client address.
    pub ip: Option<String>,
    /// The client's user agent (truncated to 256 characters).
    pub user_agent: Option<String>,
    /// Extra facts, as JSON.
    pub details: serde_json::Value,
}

impl AuditEvent {
    /// An event with just an action.
    pub fn new(action: impl Into<String>) -> Self {
        Self {
            action: action.into(),
            details: serde_json::Value::Object(Default::default()),
            ..Self::default()
        }
    }

    /// Names what the event is about: a kind (`user`, `session`, `project`) and an id.
    pub fn target(mut self, kind: &str, id: impl std::fmt::Display) -> Self {
        self.target_type = Some(kind.to_owned());
        self.target_id = Some(id.to_string());
        self
    }

    /// Sets the extra facts (never a secret).
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// Who is calling, as far as the server can tell: the client's address (after any trusted
/// proxies) and its user agent. Rate limits key on it, audit entries record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's IP address.
    pub ip: std::net::IpAddr,
    /// The `User-Agent` header, if it was text.
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// A client at `ip` with no user agent.
    pub fn new(ip: std::net::IpAddr) -> Self {
        Self {
            ip,
            user_agent: None,
        }
    }

    /// The operator on this machine (CLI commands): the loopback address, agent `tenantkit-cli`.
    pub fn operator() -> Self {
        Self {
            ip: std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            user_agent: Some("tenantkit-cli".to_owned()),
        }
    }

    /// An audit event for `action` by `actor` from this client.
    pub fn event(&self, action: &str, actor: Option<UserId>) -> AuditEvent {
        let mut event = AuditEvent::new(action);
        event.actor_id = actor;
        event.ip = Some(self.ip.to_string());
        event.user_agent = self.user_agent.clone();
        event
    }
}

/// A stored audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// The entry id.
    pub id: AuditEntryId,
    /// Position in its tenant's chain, from 1.
    #[serde(skip)]
    pub seq: i64,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who acted.
    pub actor_id: Option<UserId>,
    /// What happened.
    pub action: String,
    /// The kind of thing acted on.
    pub target_type: Option<String>,
    /// Its id.
    pub target_id: Option<String>,
    /// The client address.
    pub ip: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// Extra facts (JSON text).
    pub details: String,
    /// The previous entry's hash (32 zero bytes for the first).
    #[serde(skip)]
    pub prev_hash: Vec<u8>,
    /// This entry's hash.
    #[serde(skip)]
    pub hash: Vec<u8>,
}

impl AuditEntry {
    /// The hash this entry must have: SHA-256 over the previous hash and every field, each
    /// length-prefixed so no two different entries serialize alike.
    pub fn expected_hash(&self, tenant: TenantId) -> Vec<u8> {
        let mut hasher = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        };
        field(&self.prev_hash);
        field(tenant.as_uuid().as_bytes());
        field(self.id.as_uuid().as_bytes());
        field(&self.seq.to_be_bytes());
        field(&self.at.unix_timestamp_nanos().to_be_bytes());
        field(
            self.actor_id
                .map(|a| a.to_string())
                .unwrap_or_default()
                .as_bytes(),
        );
        field(self.action.as_bytes());
        field(self.target_type.as_deref().unwrap_or_default().as_bytes());
        field(self.target_id.as_deref().unwrap_or_default().as_bytes());
        field(self.ip.as_deref().unwrap_or_default().as_bytes());
        field(self.user_agent.as_deref().unwrap_or_default().as_bytes());
        field(self.details.as_bytes());
        hasher.finalize().to_vec()
    }
}

/// Which audit entries to list; every given condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only entries by this actor.
    pub actor_id: Option<UserId>,
    /// Only entries with this action.
    pub action: Option<String>,
    /// Only entries at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only entries before this time.
    pub until: Option<OffsetDateTime>,
}

const COLUMNS: &str = "id, seq, at, actor_id, action, target_type, target_id, ip, user_agent, details, prev_hash, hash";

impl TenantTx {
    /// Appends an event to this tenant's audit log, in this transaction: the entry commits
    /// with the change it records, or not at all.
    ///
    /// # Errors
    /// [`crate::Error::Database`] on failure.
    #[tracing::instrument(skip_all, fields(tenant = %self.tenant_id(), action = %event.action))]
    pub async fn audit(&mut self, event: AuditEvent) -> Result<AuditEntry> {
        let tenant = self.tenant_id();
        // Serialize appends per tenant, so the chain never forks.
        self.lock_tenant().await?;
        let last = crate::with_conn!(self, |c| {
            sqlx::query_as::<_, (i64, Vec<u8>)>(
                "SELECT seq, hash FROM audit_log WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1",
            )
            .bind(tenant)
            .fetch_optional(c)
            .await
        })?;
        let (seq, prev_hash) = last.map_or((1, vec![0u8; 32]), |(seq, hash)| (seq + 1, hash));
        let mut entry = AuditEntry {
            id: AuditEntryId::new(),
            seq,
            at: now(),
            actor_id: event.actor_id,
            action: event.action,
            target_type: event.target_type,
            target_id: event.target_id,
            ip: event.ip,
            user_agent: event.user_agent.map(|ua| ua.chars().take(256).collect()),
            details: event.details.to_string(),
            prev_hash,
            hash: Vec::new(),
        };
        entry.hash = entry.expected_hash(tenant);
        crate::with_conn!(self, |c| {
            sqlx::query(
                "INSERT INTO audit_log (id, tenant_id, seq, at, actor_id, action, target_type, target_id, \
                 ip, user_agent, details, prev_hash, hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(entry.id)
            .bind(tenant)
            .bind(entry.seq)
            .bind(entry.at)
            .bind(entry.actor_id)
            .bind(&entry.action)
            .bind(&entry.target_type)
            .bind(&entry.target_id)
            .bind(&entry.ip)
            .bind(&entry.user_agent)
            .bind(&entry.details)
            .bind(&entry.prev_hash)
            .bind(&entry.hash)
            .execute(c)
            .await
            .map(drop)
        })?;
        Ok(entry)
    }

    /// The tenant's audit entries in chain order, from `after_seq` (exclusive), at most `limit`.
    ///
    /// # Errors
    /// [`crate::Error::Database`] on failure.
    pub async fn audit_entries(&mut self, after_seq: i64, limit: i64) -> Result<Vec<AuditEntry>> {
        let tenant = self.tenant_id();
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_log WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        );
        Ok(crate::with_conn!(self, |c| {
            sqlx::query_as(&sql)
                .bind(tenant)
                .bind(after_seq)
                .bind(limit)
                .fetch_all(c)
                .await
        })?)
    }

    /// Entries matching `filter`, in chain order, after sequence number `after_seq`, at most
    /// `limit` (the caller pages with the last entry's `seq`).
    ///
    /// # Errors
    /// [`crate::Error::Database`] on failure.
    pub async fn search_audit(
        &mut self,
        filter: &AuditFilter,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditEntry>> {
        let tenant = self.tenant_id();
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_log WHERE tenant_id = $1 AND seq > $2 \
             AND ($3 IS NULL OR actor_id = $3) AND ($4 IS NULL OR action = $4) \
             AND ($5 IS NULL OR at >= $5) AND ($6 IS NULL OR at < $6) ORDER BY seq LIMIT $7"
        );
        Ok(crate::with_conn!(self, |c| {
            sqlx::query_as(&sql)
                .bind(tenant)
                .bind(after_seq)
                .bind(filter.actor_id)
                .bind(filter.action.as_deref())
                .bind(filter.since)
                .bind(filter.until)
                .bind(limit)
                .fetch_all(c)
                .await
        })?)
    }

    /// Checks this tenant's whole chain; `Ok(None)` when intact, else the first broken entry's
    /// sequence number and what is wrong with it.
    ///
    /// # Errors
    /// [`crate::Error::Database`] on failure.
    pub async fn verify_audit_chain(&mut self) -> Result<Option<(i64, &'static str)>> {
        let tenant = self.tenant_id();
        let mut prev = vec![0u8; 32];
        let mut expected_seq = 1;
        let mut after = 0;
        loop {
            let batch = self.audit_entries(after, 500).await?;
            let Some(last) = batch.last() else {
                return Ok(None);
            };
            after = last.seq;
            for entry in batch {
                if entry.seq != expected_seq {
                    return Ok(Some((expected_seq, "missing or reordered entry")));
                }
                if entry.prev_hash != prev {
                    return Ok(Some((entry.seq, "does not follow the previous entry")));
                }
                if entry.expected_hash(tenant) != entry.hash {
                    return Ok(Some((entry.seq, "content was changed")));
                }
                prev = entry.hash;
                expected_seq += 1;
            }
        }
    }
}
