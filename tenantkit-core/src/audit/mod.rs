//! The security audit log: append-only, one row per security event, hash-chained per tenant.

use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::{AuditEntryId, Result, TenantId, TenantTx, UserId};

mod append;

pub(crate) use append::AuditSetup;
use append::append;

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
    /// HMAC of the tenant, position and hash under the audit key, when one is configured: a
    /// chain rewritten by someone without the key does not carry valid anchors.
    #[serde(skip)]
    pub anchor: Option<Vec<u8>>,
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

const COLUMNS: &str = "id, seq, at, actor_id, action, target_type, target_id, ip, user_agent, details, prev_hash, hash, anchor";

/// The key that anchors audit entries: held by the servers (a file or a secret manager),
/// never by the database, so someone who can write the database cannot forge a chain that
/// verifies. At least 32 bytes. Its `Debug` never shows it.
#[derive(Clone)]
pub struct AuditKey(std::sync::Arc<[u8]>);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

impl AuditKey {
    /// A key of `bytes`.
    ///
    /// # Errors
    /// [`crate::Error::Config`] when shorter than 32 bytes.
    pub fn new(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 32 {
            return Err(crate::Error::Config(
                "the audit key must be at least 32 bytes".into(),
            ));
        }
        Ok(Self(bytes.into()))
    }

    /// The anchor of entry `seq` with `hash` in `tenant`'s chain.
    pub fn anchor(&self, tenant: TenantId, seq: i64, hash: &[u8]) -> Vec<u8> {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(&self.0)
            .expect("HMAC accepts any key length");
        mac.update(b"tenantkit audit anchor v1\0");
        mac.update(tenant.as_uuid().as_bytes());
        mac.update(&seq.to_be_bytes());
        mac.update(hash);
        mac.finalize().into_bytes().to_vec()
    }

    /// Whether `anchor` is the anchor of that entry (compared in constant time).
    pub fn verifies(&self, tenant: TenantId, seq: i64, hash: &[u8], anchor: &[u8]) -> bool {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(&self.0)
            .expect("HMAC accepts any key length");
        mac.update(b"tenantkit audit anchor v1\0");
        mac.update(tenant.as_uuid().as_bytes());
        mac.update(&seq.to_be_bytes());
        mac.update(hash);
        mac.verify_slice(anchor).is_ok()
    }
}

/// The head of one tenant's chain at some moment: kept outside the database (a checkpoint
/// file, object storage with a retention lock), it lets `verify` detect a cut tail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChainHead {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The last entry's position (0 for an empty chain).
    pub seq: i64,
    /// The last entry's hash, hex.
    pub hash: String,
}

/// What verifying a tenant's chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainProblem {
    /// An entry is missing or out of order at this position.
    Gap(i64),
    /// The entry at this position does not follow the previous one.
    Broken(i64),
    /// The entry at this position was edited.
    Edited(i64),
    /// The entry at this position has no anchor, or a wrong one, under the audit key.
    Unanchored(i64),
    /// The chain ends before (or differs from) a checkpoint of its head: it was cut or
    /// rewritten after the checkpoint was taken.
    Truncated {
        /// The checkpoint's position.
        checkpoint_seq: i64,
    },
}

impl ChainProblem {
    /// The position of the first broken entry.
    pub fn seq(&self) -> i64 {
        match self {
            ChainProblem::Gap(seq)
            | ChainProblem::Broken(seq)
            | ChainProblem::Edited(seq)
            | ChainProblem::Unanchored(seq) => *seq,
            ChainProblem::Truncated { checkpoint_seq } => *checkpoint_seq,
        }
    }

    /// What is wrong, in words.
    pub fn describe(&self) -> &'static str {
        match self {
            ChainProblem::Gap(_) => "missing or reordered entry",
            ChainProblem::Broken(_) => "does not follow the previous entry",
            ChainProblem::Edited(_) => "content was changed",
            ChainProblem::Unanchored(_) => "not anchored by the audit key",
            ChainProblem::Truncated { .. } => "the chain no longer reaches its checkpoint",
        }
    }
}

impl TenantTx {
    /// Appends an event to this tenant's audit log, in this transaction: the entry commits
    /// with the change it records, or not at all.
    ///
    /// # Errors
    /// [`crate::Error::Database`] on failure.
    #[tracing::instrument(skip_all, fields(tenant = %self.tenant_id(), action = %event.action))]
    pub async fn audit(&mut self, event: AuditEvent) -> Result<AuditEntry> {
        let (tenant, setup) = (self.tenant_id(), self.audit_setup());
        append(self, tenant, &setup, event).await
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

    /// Checks this tenant's whole chain; `Ok(None)` when intact, else the first problem.
    ///
    /// With `key`, every entry from the first anchored one on must carry a valid anchor (older
    /// entries, written before a key was configured, may have none), and a chain with entries
    /// but no anchor at all is unanchored from its first entry. With `checkpoint`, the chain must
    /// still contain the checkpoint's head, at its position, with its hash.
    ///
    /// # Errors
    /// [`crate::Error::Database`] on failure.
    pub async fn verify_audit_chain(
        &mut self,
        key: Option<&AuditKey>,
        checkpoint: Option<&ChainHead>,
    ) -> Result<Option<ChainProblem>> {
        let tenant = self.tenant_id();
        let mut prev = vec![0u8; 32];
        let mut expected_seq = 1;
        let mut after = 0;
        let mut anchored_from: Option<i64> = None;
        let mut unanchored_head: Option<i64> = None;
        let mut reached_checkpoint = checkpoint.is_none_or(|c| c.seq == 0);
        loop {
            let batch = self.audit_entries(after, 500).await?;
            let Some(last) = batch.last() else {
                break;
            };
            after = last.seq;
            for entry in batch {
                if entry.seq != expected_seq {
                    return Ok(Some(ChainProblem::Gap(expected_seq)));
                }
                if entry.prev_hash != prev {
                    return Ok(Some(ChainProblem::Broken(entry.seq)));
                }
                if entry.expected_hash(tenant) != entry.hash {
                    return Ok(Some(ChainProblem::Edited(entry.seq)));
                }
                if let Some(key) = key {
                    match &entry.anchor {
                        Some(anchor) if key.verifies(tenant, entry.seq, &entry.hash, anchor) => {
                            anchored_from.get_or_insert(entry.seq);
                        }
                        Some(_) => return Ok(Some(ChainProblem::Unanchored(entry.seq))),
                        None if anchored_from.is_some() => {
                            return Ok(Some(ChainProblem::Unanchored(entry.seq)));
                        }
                        None => {
                            unanchored_head.get_or_insert(entry.seq);
                        }
                    }
                }
                if let Some(checkpoint) = checkpoint
                    && entry.seq == checkpoint.seq
                {
                    if hex(&entry.hash) != checkpoint.hash {
                        return Ok(Some(ChainProblem::Truncated {
                            checkpoint_seq: checkpoint.seq,
                        }));
                    }
                    reached_checkpoint = true;
                }
                prev = entry.hash;
                expected_seq += 1;
            }
        }
        if !reached_checkpoint {
            let checkpoint_seq = checkpoint.map_or(0, |c| c.seq);
            return Ok(Some(ChainProblem::Truncated { checkpoint_seq }));
        }
        if key.is_some()
            && anchored_from.is_none()
            && let Some(first) = unanchored_head
        {
            return Ok(Some(ChainProblem::Unanchored(first)));
        }
        Ok(None)
    }

    /// The head of this tenant's chain now, to keep outside the database.
    ///
    /// # Errors
    /// [`crate::Error::Database`] on failure.
    pub async fn audit_head(&mut self) -> Result<ChainHead> {
        let tenant = self.tenant_id();
        let last: Option<(i64, Vec<u8>)> = crate::with_conn!(self, |c| {
            sqlx::query_as(
                "SELECT seq, hash FROM audit_log WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1",
            )
            .bind(tenant)
            .fetch_optional(c)
            .await
        })?;
        let (seq, hash) = last.unwrap_or((0, Vec::new()));
        Ok(ChainHead {
            tenant_id: tenant,
            seq,
            hash: hex(&hash),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
