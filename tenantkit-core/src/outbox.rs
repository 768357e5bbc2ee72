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

#[cfg(feature = "sqlite")]
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
#[cfg(feature = "sqlite")]
use tokio::sync::broadcast;

use crate::db::Pool;
#[cfg(feature = "sqlite")]
use crate::sql::Conn;
use crate::sql::{SystemTx, TenantTx, Transaction, TxCore};
use crate::{Backend, Database, Error, Result, TenantId};

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

impl Database {
    /// Claims up to `limit` (at most [`MAX_CLAIM`]) undelivered messages of `topic` that are
    /// available at `now` (never claimed, or their last lease ran out), oldest id first, and
    /// leases them until `now + lease`: until then no other claim returns them. Each claim
    /// counts in [`OutboxMessage::attempts`]. Mark what was delivered with
    /// [`Database::outbox_delivered`]; what is not marked is claimed again after its lease.
    ///
    /// `now` is the caller's clock (pass [`crate::now`]; tests pass a later instant instead of
    /// sleeping). On PostgreSQL concurrent claims skip each other's rows (`FOR UPDATE SKIP
    /// LOCKED`); on SQLite they are serialised on the writer.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid topic or a lease too long to add to `now`;
    /// [`Error::Database`] on failure (nothing is claimed then).
    pub async fn outbox_claim(
        &self,
        topic: &str,
        limit: u32,
        lease: Duration,
        now: OffsetDateTime,
    ) -> Result<Vec<OutboxMessage>> {
        check_topic(topic)?;
        let limit = i64::from(limit.min(MAX_CLAIM));
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = At::new(now);
        let until = time::Duration::try_from(lease)
            .ok()
            .and_then(|lease| now.0.checked_add(lease))
            .map(At::new)
            .ok_or_else(|| Error::Config(format!("outbox lease {lease:?} is too long")))?;
        let sql = match self.backend() {
            Backend::Sqlite => {
                "UPDATE outbox SET available_at = $1, attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM outbox WHERE topic = $2 AND delivered_at IS NULL \
                              AND available_at <= $3 ORDER BY id LIMIT $4) \
                 RETURNING id, tenant_id, topic, payload, created_at, attempts"
            }
            Backend::Postgres => {
                "UPDATE outbox SET available_at = $1, attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM outbox WHERE topic = $2 AND delivered_at IS NULL \
                              AND available_at <= $3 ORDER BY id LIMIT $4 \
                              FOR UPDATE SKIP LOCKED) \
                 RETURNING id, tenant_id, topic, payload::text AS payload, created_at, attempts"
            }
        };
        let mut tx = self.begin_system().await?;
        let rows: Vec<MessageRow> = crate::with_conn!(&mut tx, |c| {
            sqlx::query_as(sql)
                .bind(until)
                .bind(topic)
                .bind(now)
                .bind(limit)
                .fetch_all(c)
                .await
        })?;
        tx.commit().await?;
        let mut messages: Vec<OutboxMessage> = rows
            .into_iter()
            .map(|row| OutboxMessage {
                id: row.id,
                tenant_id: row.tenant_id,
                topic: row.topic,
                payload: row.payload,
                created_at: row.created_at,
                attempts: row.attempts,
            })
            .collect();
        messages.sort_by_key(|m| m.id);
        Ok(messages)
    }

    /// Marks the messages `ids` delivered: no claim returns them again. Ids that are unknown
    /// or already delivered are skipped. How many were marked now.
    ///
    /// # Errors
    /// [`Error::Database`] on failure (then none of this call's batch is marked, and they are
    /// claimed again after their lease).
    pub async fn outbox_delivered(&self, ids: &[i64]) -> Result<u64> {
        let mut marked = 0;
        for batch in ids.chunks(MARK_BATCH) {
            let placeholders: Vec<String> = (2..batch.len() + 2).map(|i| format!("${i}")).collect();
            let sql = format!(
                "UPDATE outbox SET delivered_at = $1 \
                 WHERE delivered_at IS NULL AND id IN ({})",
                placeholders.join(", ")
            );
            let at = At::new(crate::now());
            let mut tx = self.begin_system().await?;
            let done = crate::with_conn!(&mut tx, |c| {
                let mut query = sqlx::query(&sql).bind(at);
                for id in batch {
                    query = query.bind(*id);
                }
                query.execute(c).await.map(|done| done.rows_affected())
            })?;
            tx.commit().await?;
            marked += done;
        }
        Ok(marked)
    }

    /// Deletes the messages delivered before `before` (a retention: keep delivered messages
    /// a while to investigate, then prune them). How many were deleted. Undelivered messages
    /// are never deleted.
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    pub async fn outbox_prune(&self, before: OffsetDateTime) -> Result<u64> {
        let before = At::new(before);
        let mut tx = self.begin_system().await?;
        let deleted = crate::with_conn!(&mut tx, |c| {
            sqlx::query("DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < $1")
                .bind(before)
                .execute(c)
                .await
                .map(|done| done.rows_affected())
        })?;
        tx.commit().await?;
        Ok(deleted)
    }

    /// Listens for notifications on `channel` ([`OUTBOX_CHANNEL`] for outbox inserts) until
    /// the [`Listener`] is dropped.
    ///
    /// - PostgreSQL: `LISTEN` on a connection of the listener's own (outside the pool's
    ///   [`DatabaseOptions::max_connections`](crate::DatabaseOptions)); it hears every
    ///   `NOTIFY` on the channel, from any instance, delivered when the notifying transaction
    ///   commits, never for a rolled-back one. A lost connection is re-established, and
    ///   reported as [`Notification::Missed`].
    /// - SQLite: an in-process channel, woken after the commit of an outbox insert made
    ///   through this [`Database`] or a clone of it; other processes writing the same file
    ///   are not heard. A listener that falls more than 1,024 notifications behind gets
    ///   [`Notification::Missed`].
    ///
    /// Notifications are only hints that something is new: relays still claim on a timer,
    /// and at once after [`Notification::Missed`].
    ///
    /// # Errors
    /// [`Error::Config`] for an empty channel name or one longer than 63 bytes;
    /// [`Error::Database`] when the listening connection cannot be opened.
    pub async fn listen(&self, channel: &str) -> Result<Listener> {
        if channel.is_empty() || channel.len() > 63 || channel.chars().any(char::is_control) {
            return Err(Error::Config(format!(
                "a notification channel is 1 to 63 bytes without control characters, not {channel:?}"
            )));
        }
        let inner = match self.pool() {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pools) => ListenerInner::Local {
                channel: channel.into(),
                receiver: pools.writer.notifier().sender.subscribe(),
            },
            #[cfg(feature = "postgres")]
            Pool::Postgres(connections) => {
                let mut listener = connections.listener().await?;
                listener.listen(channel).await?;
                ListenerInner::Postgres(Box::new(listener))
            }
        };
        Ok(Listener { inner })
    }
}

/// What a [`Listener`] hears.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notification {
    /// A notification on the listened channel.
    Message {
        /// The channel.
        channel: String,
        /// Its payload (for [`OUTBOX_CHANNEL`]: the topic of the messages written).
        payload: String,
    },
    /// Notifications may have been lost (PostgreSQL: the listening connection was lost and
    /// re-established; SQLite: the listener fell behind): look at the table now.
    Missed,
}

/// Notifications of one channel, from [`Database::listen`].
pub struct Listener {
    inner: ListenerInner,
}

enum ListenerInner {
    #[cfg(feature = "sqlite")]
    Local {
        channel: Arc<str>,
        receiver: broadcast::Receiver<LocalNote>,
    },
    #[cfg(feature = "postgres")]
    Postgres(Box<sqlx::postgres::PgListener>),
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match &self.inner {
            #[cfg(feature = "sqlite")]
            ListenerInner::Local { .. } => Backend::Sqlite,
            #[cfg(feature = "postgres")]
            ListenerInner::Postgres(_) => Backend::Postgres,
        };
        f.debug_struct("Listener")
            .field("backend", &backend)
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// Waits for the next notification. Put a timeout around it (`tokio::time::timeout`) and
    /// look at the table when it elapses: a relay must not depend on notifications alone. A
    /// wait cancelled on PostgreSQL may drop a notification that was arriving, so after a
    /// timeout, look at the table as after [`Notification::Missed`].
    ///
    /// # Errors
    /// [`Error::Database`] when the PostgreSQL connection cannot be re-established (the
    /// next call tries again); [`Error::Config`] on SQLite once the database is gone.
    pub async fn recv(&mut self) -> Result<Notification> {
        match &mut self.inner {
            #[cfg(feature = "sqlite")]
            ListenerInner::Local { channel, receiver } => loop {
                match receiver.recv().await {
                    Ok(note) if note.channel == *channel => {
                        return Ok(Notification::Message {
                            channel: note.channel.to_string(),
                            payload: note.payload.to_string(),
                        });
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return Ok(Notification::Missed),
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(Error::Config("the database was dropped".to_owned()));
                    }
                }
            },
            #[cfg(feature = "postgres")]
            ListenerInner::Postgres(listener) => Ok(match listener.try_recv().await? {
                Some(note) => Notification::Message {
                    channel: note.channel().to_owned(),
                    payload: note.payload().to_owned(),
                },
                None => Notification::Missed,
            }),
        }
    }
}

/// One in-process notification.
#[cfg(feature = "sqlite")]
#[derive(Debug, Clone)]
pub(crate) struct LocalNote {
    channel: Arc<str>,
    payload: Arc<str>,
}

/// SQLite's stand-in for `NOTIFY`: a broadcast to this process's listeners.
#[cfg(feature = "sqlite")]
#[derive(Debug, Clone)]
pub(crate) struct LocalNotifier {
    sender: broadcast::Sender<LocalNote>,
}

#[cfg(feature = "sqlite")]
impl Default for LocalNotifier {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(LOCAL_CAPACITY).0,
        }
    }
}

#[cfg(feature = "sqlite")]
impl LocalNotifier {
    /// Wakes the listeners of `channel` (none listening is fine).
    pub(crate) fn notify(&self, channel: &str, payload: &str) {
        let _ = self.sender.send(LocalNote {
            channel: channel.into(),
            payload: payload.into(),
        });
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::At;
    use time::macros::datetime;

    /// RFC 3339 as `time` writes it misorders these as text (`…:05Z` after `…:05.1Z`,
    /// `…:05.5Z` after `…:05.51Z`); the fixed-width form stored on SQLite does not.
    #[test]
    fn sqlite_times_compare_as_text_in_time_order() {
        let times = [
            datetime!(2026-01-02 03:04:05 UTC),
            datetime!(2026-01-02 03:04:05.1 UTC),
            datetime!(2026-01-02 04:04:05.2 +01:00),
            datetime!(2026-01-02 03:04:05.5 UTC),
            datetime!(2026-01-02 03:04:05.51 UTC),
            datetime!(2026-01-02 03:04:05.999999 UTC),
            datetime!(2026-01-02 03:04:06 UTC),
        ];
        let texts: Vec<String> = times.iter().map(|t| At::new(*t).text()).collect();
        assert!(texts.windows(2).all(|w| w[0] < w[1]), "{texts:?}");
        assert_eq!(texts[0], "2026-01-02T03:04:05.000000Z");
        // Read back as sqlx decodes it, it is the same instant.
        for (t, text) in times.iter().zip(&texts) {
            let parsed =
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .expect("RFC 3339");
            assert_eq!(parsed, *t);
        }
    }
}
