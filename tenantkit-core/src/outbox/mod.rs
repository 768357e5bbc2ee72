//! The transactional outbox: messages written in the same transaction as the change they
//! announce, relayed after the commit, at least once, on both backends.
//!
//! A crate that must tell the world about a change (a realtime event, a mail to send, a
//! revocation to publish) writes an outbox message inside the transaction that makes the
//! change, with [`TenantTx::outbox`] (the message belongs to that tenant) or
//! [`SystemTx::outbox`] (a system message, no tenant). The message exists exactly when the
//! change does: a rolled-back transaction leaves neither. A relay then delivers it:
//!
//! 1. [`Database::outbox_claim`] takes up to `limit` undelivered messages of one topic whose
//!    lease ran out, oldest id first, and leases them for `lease` (bumping `attempts`);
//!    concurrent relays never get the same message while its lease runs (PostgreSQL:
//!    `FOR UPDATE SKIP LOCKED`; SQLite: claims are serialised on the one writer);
//! 2. the relay delivers them, then [`Database::outbox_delivered`] marks them;
//! 3. a relay that dies in between (or fails to deliver) never marks them: once the lease has
//!    run out they are claimed again. Delivery is therefore **at least once**: a consumer
//!    that must act once deduplicates by [`OutboxMessage::id`];
//! 4. [`Database::outbox_prune`] deletes delivered messages older than a retention.
//!
//! Ordering: claims are ordered by id, which grows with every insert. On PostgreSQL ids are
//! taken at insert, not at commit, so a message of a transaction that commits later may carry
//! a lower id than one already claimed: order by id is a good approximation of commit order,
//! not a guarantee, and consumers needing a strict per-channel order assign their own sequence
//! numbers when they relay.
//!
//! Waking a relay: [`Database::listen`] on [`OUTBOX_CHANNEL`] yields a notification (payload:
//! the topic) after each commit that wrote outbox messages, one per topic and transaction.
//! On PostgreSQL a trigger sends `pg_notify` (delivered at commit, to every instance); on
//! SQLite the writer's in-process notifier is woken by an `after_commit` hook, so only
//! listeners of the same [`Database`] (clones included) hear it, not other processes.
//! Notifications are hints: when one may have been lost ([`Notification::Missed`]) and on a
//! timer anyway, a relay claims without waiting.
//!
//! ```
//! use std::time::Duration;
//! use tenantkit_core::{Database, Migrations, NewTenant, Result, TenantScope};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<()> {
//! let db = Database::connect("sqlite::memory:").await?;
//! db.migrate(&Migrations::new()).await?;
//! let (tenant, tx) = db.create_tenant(NewTenant { name: "Acme".into(), slug: None }).await?;
//! tx.commit().await?;
//!
//! let mut tx = db.begin(&TenantScope::for_system(tenant.id)).await?;
//! // ... the change itself ...
//! tx.outbox("mail", &serde_json::json!({ "template": "welcome" })).await?;
//! tx.commit().await?;
//!
//! // The relay.
//! let claimed = db.outbox_claim("mail", 100, Duration::from_secs(30), tenantkit_core::now()).await?;
//! assert_eq!(claimed.len(), 1);
//! assert_eq!(claimed[0].tenant_id, Some(tenant.id));
//! // ... deliver ...
//! let ids: Vec<i64> = claimed.iter().map(|m| m.id).collect();
//! db.outbox_delivered(&ids).await?;
//! # Ok(())
//! # }
//! ```

mod listen;
mod relay;
#[cfg(all(test, feature = "sqlite"))]
mod tests;

use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

#[cfg(feature = "sqlite")]
use crate::sql::Conn;
use crate::sql::{SystemTx, TenantTx, Transaction, TxCore};
use crate::{Backend, Error, Result, TenantId};
// Named by the module docs ([`Database::listen`], the relay calls).
#[cfg(doc)]
use crate::Database;

#[cfg(feature = "sqlite")]
pub(crate) use listen::LocalNotifier;
pub use listen::{Listener, Notification};

/// The notification channel outbox inserts wake (payload: the message's topic).
pub const OUTBOX_CHANNEL: &str = "tenantkit_outbox";

/// Longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 200;

/// Most messages one [`Database::outbox_claim`] returns.
pub const MAX_CLAIM: u32 = 1000;

/// How many ids one statement of [`Database::outbox_delivered`] marks.
const MARK_BATCH: usize = 500;

/// How many in-process notifications a slow SQLite listener may fall behind before it is told
/// it missed some.
#[cfg(feature = "sqlite")]
const LOCAL_CAPACITY: usize = 1024;

/// One outbox message, as a relay claims it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxMessage {
    /// Its id: unique, never reused, growing with every insert. Consumers deduplicate by it.
    pub id: i64,
    /// The tenant whose transaction wrote it; `None` for a system message.
    pub tenant_id: Option<TenantId>,
    /// Its topic (which relay it is for).
    pub topic: String,
    /// Its payload, a JSON document (PostgreSQL normalises it: key order and whitespace may
    /// differ from what was written).
    pub payload: String,
    /// When it was written.
    pub created_at: OffsetDateTime,
    /// How many times it was claimed, this claim included (more than one: an earlier relay
    /// did not mark it delivered within its lease).
    pub attempts: i32,
}

impl OutboxMessage {
    /// The payload decoded as `T`.
    ///
    /// # Errors
    /// [`Error::Config`] when it does not decode (the writer and the relay disagree on the
    /// topic's type).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.payload).map_err(|e| {
            Error::Config(format!(
                "outbox message {} (topic `{}`) does not decode: {e}",
                self.id, self.topic
            ))
        })
    }
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: i64,
    tenant_id: Option<TenantId>,
    topic: String,
    payload: String,
    created_at: OffsetDateTime,
    attempts: i32,
}

/// A point in time stored so that comparisons in SQL order it correctly on both backends:
/// `timestamptz` on PostgreSQL; on SQLite a fixed-width UTC text (`…T…:…:….ffffffZ`, always
/// six digits), which compares as text in time order (RFC 3339 as `time` writes it drops
/// trailing zeros of the fraction, and `…:05Z` would sort after `…:05.1Z`).
#[derive(Debug, Clone, Copy)]
struct At(OffsetDateTime);

impl At {
    /// `at` in UTC at microsecond precision (what both backends store).
    fn new(at: OffsetDateTime) -> Self {
        let utc = at.to_offset(time::UtcOffset::UTC);
        At(utc
            .replace_nanosecond(utc.nanosecond() / 1_000 * 1_000)
            .unwrap_or(utc))
    }

    #[cfg(feature = "sqlite")]
    fn text(self) -> String {
        let t = self.0;
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.microsecond()
        )
    }
}

#[cfg(feature = "sqlite")]
impl sqlx::Type<sqlx::Sqlite> for At {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <String as sqlx::Type<sqlx::Sqlite>>::type_info()
    }
}

#[cfg(feature = "sqlite")]
impl<'q> sqlx::Encode<'q, sqlx::Sqlite> for At {
    fn encode_by_ref(
        &self,
        buf: &mut Vec<sqlx::sqlite::SqliteArgumentValue<'q>>,
    ) -> std::result::Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <String as sqlx::Encode<'q, sqlx::Sqlite>>::encode(self.text(), buf)
    }
}

#[cfg(feature = "postgres")]
impl sqlx::Type<sqlx::Postgres> for At {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <OffsetDateTime as sqlx::Type<sqlx::Postgres>>::type_info()
    }
}

#[cfg(feature = "postgres")]
impl sqlx::Encode<'_, sqlx::Postgres> for At {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> std::result::Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <OffsetDateTime as sqlx::Encode<'_, sqlx::Postgres>>::encode_by_ref(&self.0, buf)
    }
}

fn check_topic(topic: &str) -> Result<()> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN || topic.chars().any(char::is_control) {
        return Err(Error::Config(format!(
            "an outbox topic is 1 to {MAX_TOPIC_LEN} bytes without control characters, not {topic:?}"
        )));
    }
    Ok(())
}

/// Writes one message in `tx`'s transaction; on SQLite, announces its topic after the commit.
async fn insert<T: Transaction + ?Sized>(
    tx: &mut T,
    tenant: Option<TenantId>,
    topic: &str,
    payload: &(impl Serialize + ?Sized),
) -> Result<i64> {
    check_topic(topic)?;
    let payload = serde_json::to_string(payload).map_err(|e| {
        Error::Config(format!(
            "outbox payload of `{topic}` does not serialise: {e}"
        ))
    })?;
    let core = crate::sql::core_of(tx);
    let sql = match core.backend() {
        Backend::Sqlite => {
            "INSERT INTO outbox (tenant_id, topic, payload, created_at, available_at) \
             VALUES ($1, $2, $3, $4, $4) RETURNING id"
        }
        Backend::Postgres => {
            "INSERT INTO outbox (tenant_id, topic, payload, created_at, available_at) \
             VALUES ($1, $2, $3::jsonb, $4, $4) RETURNING id"
        }
    };
    let at = At::new(crate::now());
    let id: i64 = crate::with_conn!(tx, |c| {
        sqlx::query_scalar(sql)
            .bind(tenant)
            .bind(topic)
            .bind(&payload)
            .bind(at)
            .fetch_one(c)
            .await
    })?;
    announce(crate::sql::core_of(tx), topic);
    Ok(id)
}

/// SQLite: wakes this process's outbox listeners once `core` commits (once per topic and
/// transaction). PostgreSQL's trigger does this itself.
fn announce(core: &mut TxCore, topic: &str) {
    #[cfg(feature = "sqlite")]
    {
        let notifier = match &core.conn {
            Conn::Sqlite(crate::sql::SqliteTx::Writer(writer)) => writer.notifier().clone(),
            _ => return,
        };
        if core.announced_topics.iter().any(|t| t == topic) {
            return;
        }
        core.announced_topics.push(topic.to_owned());
        let topic = topic.to_owned();
        core.after_commit(Box::new(move || notifier.notify(OUTBOX_CHANNEL, &topic)));
    }
    #[cfg(not(feature = "sqlite"))]
    let _ = (core, topic);
}

impl TenantTx {
    /// Writes an outbox message of this tenant in this transaction (see [`crate::outbox`]):
    /// it exists for relays exactly when this transaction commits. Its id.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid topic (1 to [`MAX_TOPIC_LEN`] bytes, no control
    /// characters) or a payload that does not serialise to JSON; [`Error::Database`] when the
    /// insert fails (a read-only transaction), which poisons the transaction.
    pub async fn outbox(
        &mut self,
        topic: &str,
        payload: &(impl Serialize + ?Sized),
    ) -> Result<i64> {
        let tenant = self.tenant_id();
        insert(self, Some(tenant), topic, payload).await
    }
}

impl SystemTx {
    /// Writes a system outbox message (no tenant) in this transaction (see
    /// [`crate::outbox`]). Its id.
    ///
    /// # Errors
    /// As [`TenantTx::outbox`].
    pub async fn outbox(
        &mut self,
        topic: &str,
        payload: &(impl Serialize + ?Sized),
    ) -> Result<i64> {
        insert(self, None, topic, payload).await
    }
}
