//! Appending to a tenant's chain: the entry hashed onto the previous one (and anchored), the
//! tenant locked so the chain never forks, and on SQLite the remembered chain heads that make
//! an append one statement.

use crate::{AuditEntryId, Result, TenantId, now};

use super::{AuditEntry, AuditEvent, AuditKey};

/// What a database handle gives each of its transactions for audit entries: the key that
/// anchors them, and (SQLite) where each tenant's chain ended at this process's last append.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuditSetup {
    pub(crate) key: Option<AuditKey>,
    pub(crate) heads: Option<std::sync::Arc<ChainHeads>>,
}

/// The last `(seq, hash)` this process appended to each tenant's chain, so that an append
/// can skip reading the chain's end. Only a hint: the insert checks in the same statement
/// that the chain still ends there (another process, a rolled-back transaction), and reads
/// the end when it does not. Bounded: it starts over when it holds [`ChainHeads::MAX`]
/// tenants.
#[derive(Default)]
pub(crate) struct ChainHeads(std::sync::Mutex<std::collections::HashMap<TenantId, (i64, Vec<u8>)>>);

impl std::fmt::Debug for ChainHeads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainHeads").finish_non_exhaustive()
    }
}

impl ChainHeads {
    const MAX: usize = 4096;

    fn get(&self, tenant: TenantId) -> Option<(i64, Vec<u8>)> {
        let heads = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        heads.get(&tenant).cloned()
    }

    fn set(&self, tenant: TenantId, seq: i64, hash: &[u8]) {
        let mut heads = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if heads.len() >= Self::MAX && !heads.contains_key(&tenant) {
            heads.clear();
        }
        heads.insert(tenant, (seq, hash.to_vec()));
    }
}

/// The head of both inserts of an entry.
macro_rules! insert_entry {
    () => {
        "INSERT INTO audit_log (id, tenant_id, seq, at, actor_id, action, target_type, \
         target_id, ip, user_agent, details, prev_hash, hash, anchor) "
    };
}

/// An entry, unconditionally.
const INSERT: &str = concat!(
    insert_entry!(),
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
);

/// An entry, only while the chain's last entry is `($3 - 1, $12)`, the one it follows.
const INSERT_IF_HEAD: &str = concat!(
    insert_entry!(),
    "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14 \
     WHERE EXISTS (SELECT 1 FROM (SELECT seq, hash FROM audit_log WHERE tenant_id = $2 \
                                  ORDER BY seq DESC LIMIT 1) last \
                   WHERE last.seq = $3 - 1 AND last.hash = $12)"
);

/// Appends `event` to `tenant`'s chain through `tx` (whose settings must reach the tenant's
/// rows): the tenant row is locked so the chain never forks, the entry is hashed onto the
/// previous one and, with a key, anchored.
///
/// With a head cache (SQLite, whose one writer connection runs appends one at a time) the
/// common case is one statement: the entry is chained onto the cached head and inserted only
/// if the chain still ends there; otherwise the end is read and the entry made again.
pub(super) async fn append<T: crate::Transaction>(
    tx: &mut T,
    tenant: TenantId,
    setup: &AuditSetup,
    event: AuditEvent,
) -> Result<AuditEntry> {
    crate::members::lock_tenant(tx, tenant).await?;
    let mut entry = AuditEntry {
        id: AuditEntryId::new(),
        seq: 0,
        at: now(),
        actor_id: event.actor_id,
        action: event.action,
        target_type: event.target_type,
        target_id: event.target_id,
        ip: event.ip,
        user_agent: event.user_agent.map(|ua| ua.chars().take(256).collect()),
        details: event.details.to_string(),
        prev_hash: Vec::new(),
        hash: Vec::new(),
        anchor: None,
    };
    let heads = setup.heads.as_deref();
    let mut inserted = false;
    if let Some((seq, hash)) = heads.and_then(|heads| heads.get(tenant)) {
        chain(&mut entry, tenant, setup.key.as_ref(), seq, hash);
        inserted = insert(tx, tenant, &entry, true).await?;
    }
    if !inserted {
        let last = crate::with_conn!(tx, |c| {
            sqlx::query_as::<_, (i64, Vec<u8>)>(
                "SELECT seq, hash FROM audit_log WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1",
            )
            .bind(tenant)
            .fetch_optional(c)
            .await
        })?;
        let (seq, hash) = last.unwrap_or((0, vec![0u8; 32]));
        chain(&mut entry, tenant, setup.key.as_ref(), seq, hash);
        insert(tx, tenant, &entry, false).await?;
    }
    if let Some(heads) = heads {
        heads.set(tenant, entry.seq, &entry.hash);
    }
    Ok(entry)
}

/// Puts `entry` after the entry `(seq, hash)`: its position, previous hash, hash and anchor.
fn chain(
    entry: &mut AuditEntry,
    tenant: TenantId,
    key: Option<&AuditKey>,
    seq: i64,
    hash: Vec<u8>,
) {
    entry.seq = seq + 1;
    entry.prev_hash = hash;
    entry.hash = entry.expected_hash(tenant);
    entry.anchor = key.map(|key| key.anchor(tenant, entry.seq, &entry.hash));
}

/// Inserts `entry`; with `if_head`, only while the chain's last entry is the one it follows
/// (`false`: it is not, and nothing was written).
async fn insert<T: crate::Transaction>(
    tx: &mut T,
    tenant: TenantId,
    entry: &AuditEntry,
    if_head: bool,
) -> Result<bool> {
    let sql = if if_head { INSERT_IF_HEAD } else { INSERT };
    let rows = crate::with_conn!(tx, |c| {
        sqlx::query(sql)
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
            .bind(&entry.anchor)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
    })?;
    Ok(rows > 0)
}

impl crate::SystemTx {
    /// Appends an event to `tenant`'s audit log inside this system transaction, so that work
    /// spanning tenants (a password reset ends sessions everywhere) commits with its entries
    /// in every tenant, or not at all. `tenant` must come from the system's own records.
    ///
    /// # Errors
    /// [`crate::Error::Database`] on failure.
    #[tracing::instrument(skip_all, fields(tenant = %tenant, action = %event.action))]
    pub async fn audit_in(&mut self, tenant: TenantId, event: AuditEvent) -> Result<AuditEntry> {
        let setup = self.audit_setup();
        // On PostgreSQL the entry is a row of `tenant`: act in that tenant for these
        // statements only, then leave it again.
        self.enter_tenant(Some(tenant)).await?;
        let entry = append(self, tenant, &setup, event).await;
        self.enter_tenant(None).await?;
        entry
    }
}
