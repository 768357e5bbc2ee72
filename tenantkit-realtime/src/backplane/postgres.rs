//! The PostgreSQL backplane (feature `postgres`): sequence numbers and history in tables,
//! events to every instance by `LISTEN`/`NOTIFY` carrying only the event's id.
//!
//! Tables (migration 5002): `realtime_channels` (the counter per channel) and
//! `realtime_events` (the history, bodies included). A publish is one statement: it bumps the
//! channel's counter (the row lock orders a channel's publishers, so a channel's ids, seqs and
//! commits are in the same order), inserts the event and `pg_notify`s its id on
//! `tenantkit_realtime`, delivered at commit in commit order. Every instance listens on one
//! connection and reads each notified event by id.
//!
//! A listening connection that is lost loses the notifications sent meanwhile. After it
//! reconnects, the instance replays from the table by offset: every event after the last id
//! it handled (and those of the last few seconds, in case one committed out of id order),
//! skipping ids it already handed out. Its clients keep their sockets and see no gap.
//!
//! History is pruned by [`PgBackplane::prune`] (run it periodically; [`PgBackplane::run_pruner`]
//! does) to [`HistoryLimits::max_events`] per channel and [`HistoryLimits::max_age`].
//!
//! Revocations travel on `tenantkit_revocations` ([`PgBackplane::revocation_bus`]).

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::{FromRow, Row as _};
use tenantkit_auth::RevocationBus;
use tenantkit_core::TenantId;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::tasks::Tasks;
use uuid::Uuid;

use super::bus::{CrossBus, Held, forward};
use super::{Backplane, Event, HistoryLimits, Publish, Replay, replay_from};
use crate::channel::{BoxFuture, ChannelKey};
use crate::{Error, Result};

/// The notification channel of events.
const EVENTS_CHANNEL: &str = "tenantkit_realtime";
/// The notification channel of revocations.
const REVOCATIONS_CHANNEL: &str = "tenantkit_revocations";

/// How far back (beyond the last id handled) a replay after a reconnect looks for events that
/// committed out of id order. A publish is one autocommit statement, so its id and its commit
/// are milliseconds apart; this is generous.
const REPLAY_WINDOW_SECS: f64 = 10.0;

/// Ids remembered as handed out (to skip duplicates of a replay).
const SEEN_IDS: usize = 65_536;

/// NOTIFY payloads are limited to 8000 bytes.
const MAX_NOTIFY: usize = 7900;

const PUBLISH: &str = "\
WITH existing AS (
    SELECT seq FROM realtime_events WHERE tenant_id = $1 AND name = $2 AND origin = $6
), bump AS (
    INSERT INTO realtime_channels (tenant_id, name, seq, updated_at)
    SELECT $1, $2, 1, now() WHERE NOT EXISTS (SELECT 1 FROM existing)
    ON CONFLICT (tenant_id, name)
    DO UPDATE SET seq = realtime_channels.seq + 1, updated_at = now()
    RETURNING seq
), ins AS (
    INSERT INTO realtime_events (tenant_id, name, seq, event, data, access_changed, origin)
    SELECT $1, $2, seq, $3, $4, $5, $6 FROM bump
    RETURNING id, seq
)
SELECT seq, pg_notify('tenantkit_realtime', id::text)::text AS notified FROM ins
UNION ALL
SELECT seq, NULL FROM existing";

#[derive(FromRow)]
struct Row {
    id: i64,
    tenant_id: Uuid,
    name: String,
    seq: i64,
    event: String,
    data: String,
    access_changed: bool,
    origin: Option<i64>,
}

/// The columns of [`Row`], for the queries below (one literal each, built at compile time).
macro_rules! select_events {
    ($where:literal) => {
        concat!(
            "SELECT id, tenant_id, name, seq, event, data, access_changed, origin \
             FROM realtime_events WHERE ",
            $where
        )
    };
}

/// A channel's events after a seq, within the history bounds.
const REPLAY: &str = select_events!(
    "tenant_id = $1 AND name = $2 AND seq > $3 AND seq <= $4 AND seq > $4 - $5 \
     AND at >= now() - make_interval(secs => $6) ORDER BY seq"
);
/// One notified event.
const BY_ID: &str = select_events!("id = $1");
/// What a lost listener may have missed: after the last id handled, and the last seconds.
const CATCH_UP: &str =
    select_events!("id > $1 OR at > now() - make_interval(secs => $2) ORDER BY id");

impl Row {
    fn into_event(self) -> Option<Event> {
        let channel = ChannelKey::new(TenantId::from_uuid(self.tenant_id), &self.name).ok()?;
        let data = RawValue::from_string(self.data).ok()?;
        let message = Publish {
            channel,
            event: self.event,
            data,
            access_changed: self.access_changed,
            origin: self.origin,
        };
        Some(Event::new(message, u64::try_from(self.seq).ok()?))
    }
}

fn db_error(err: &sqlx::Error) -> Error {
    Error::Backplane(format!("postgres: {err}"))
}

/// The PostgreSQL [`Backplane`]. Cheap to clone; its tasks stop when the last clone is
/// dropped.
#[derive(Clone)]
pub struct PgBackplane {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    limits: HistoryLimits,
    events: broadcast::Sender<Arc<Event>>,
    bus: Arc<CrossBus>,
    _tasks: Tasks,
}

impl fmt::Debug for PgBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgBackplane")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl PgBackplane {
    /// Connects to the application database at `url` (the role needs the grants of
    /// migration 5002; tenantkit-realtime's migrations create the tables), with a small pool
    /// of its own and one listening connection. Returns once this instance listens.
    ///
    /// # Errors
    /// [`Error::Backplane`] when the database cannot be reached.
    pub async fn connect(url: &str, limits: HistoryLimits) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| db_error(&e))?;
        let mut listener = PgListener::connect_with(&pool)
            .await
            .map_err(|e| db_error(&e))?;
        listener
            .listen_all([EVENTS_CHANNEL, REVOCATIONS_CHANNEL])
            .await
            .map_err(|e| db_error(&e))?;
        // The newest id now: events before it are history, not news.
        let last: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM realtime_events")
            .fetch_one(&pool)
            .await
            .map_err(|e| db_error(&e))?;
        let (events, _) = broadcast::channel(super::memory::MemoryBackplane::CAPACITY);
        let (bus, queue) = CrossBus::new(MAX_NOTIFY);
        let listen = tokio::spawn(
            Listener {
                pool: pool.clone(),
                events: events.clone(),
                bus: bus.clone(),
                last: last.unwrap_or(0),
                seen: HashSet::new(),
                order: VecDeque::new(),
            }
            .run(listener),
        );
        let sender = pool.clone();
        let send = tokio::spawn(forward(queue, move |payload| {
            let sender = sender.clone();
            async move {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(REVOCATIONS_CHANNEL)
                    .bind(payload)
                    .execute(&sender)
                    .await
                    .map(drop)
            }
        }));
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                limits,
                events,
                bus,
                _tasks: Tasks::new(vec![listen, send]),
            }),
        })
    }

    /// A [`RevocationBus`] over this database's `NOTIFY`: a revocation published on any
    /// instance reaches every instance's subscribers (this instance's at once). After the
    /// listening connection was lost, subscribers get a
    /// [`tenantkit_auth::Revocation::missed`] notice.
    pub fn revocation_bus(&self) -> Arc<dyn RevocationBus> {
        Arc::new(Held {
            bus: self.inner.bus.clone(),
            backplane: self.clone(),
        })
    }

    /// Deletes history beyond the limits (per channel: more than `max_events`, older than
    /// `max_age`), and the counters of channels quiet for a week. Returns the events deleted.
    ///
    /// # Errors
    /// [`Error::Backplane`] on a database error.
    pub async fn prune(&self) -> Result<u64> {
        let max_events = i64::try_from(self.inner.limits.max_events).unwrap_or(i64::MAX);
        let max_age = self.inner.limits.max_age.as_secs_f64();
        let deleted = sqlx::query(
            "DELETE FROM realtime_events e USING realtime_channels c \
             WHERE e.tenant_id = c.tenant_id AND e.name = c.name \
             AND (e.seq <= c.seq - $1 OR e.at < now() - make_interval(secs => $2))",
        )
        .bind(max_events)
        .bind(max_age)
        .execute(&self.inner.pool)
        .await
        .map_err(|e| db_error(&e))?
        .rows_affected();
        sqlx::query(
            "DELETE FROM realtime_channels c WHERE c.updated_at < now() - interval '7 days' \
             AND NOT EXISTS (SELECT 1 FROM realtime_events e \
                             WHERE e.tenant_id = c.tenant_id AND e.name = c.name)",
        )
        .execute(&self.inner.pool)
        .await
        .map_err(|e| db_error(&e))?;
        Ok(deleted)
    }

    /// Prunes every `every` until the backplane is dropped (errors are logged).
    pub fn run_pruner(&self, every: Duration) -> JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let backplane = Self { inner };
                if let Err(err) = backplane.prune().await {
                    tracing::warn!(error = %err, "realtime: pruning history failed");
                }
            }
        })
    }

    async fn publish_once(&self, message: &Publish) -> std::result::Result<u64, sqlx::Error> {
        let seq: i64 = sqlx::query(PUBLISH)
            .bind(message.channel.tenant.as_uuid())
            .bind(&*message.channel.name)
            .bind(&message.event)
            .bind(message.data.get())
            .bind(message.access_changed)
            .bind(message.origin)
            .fetch_one(&self.inner.pool)
            .await?
            .try_get("seq")?;
        Ok(u64::try_from(seq).unwrap_or(0))
    }
}

impl Backplane for PgBackplane {
    fn publish(&self, message: Publish) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            match self.publish_once(&message).await {
                // Two instances republishing one outbox message at once: the loser's insert
                // hit the origin's unique index (and rolled back its bump); the winner's seq
                // is now there to find.
                Err(sqlx::Error::Database(err)) if err.is_unique_violation() => {
                    self.publish_once(&message).await.map_err(|e| db_error(&e))
                }
                other => other.map_err(|e| db_error(&e)),
            }
        })
    }

    fn replay<'a>(
        &'a self,
        channel: &'a ChannelKey,
        since: Option<u64>,
    ) -> BoxFuture<'a, Result<Replay>> {
        Box::pin(async move {
            let tenant = channel.tenant.as_uuid();
            let seq: Option<i64> = sqlx::query_scalar(
                "SELECT seq FROM realtime_channels WHERE tenant_id = $1 AND name = $2",
            )
            .bind(tenant)
            .bind(&*channel.name)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| db_error(&e))?;
            let seq = seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
            let Some(after) = since.filter(|s| *s < seq) else {
                return Ok(replay_from(std::iter::empty(), seq, since));
            };
            let max_events = i64::try_from(self.inner.limits.max_events).unwrap_or(i64::MAX);
            let rows: Vec<Row> = sqlx::query_as(REPLAY)
                .bind(tenant)
                .bind(&*channel.name)
                .bind(i64::try_from(after).unwrap_or(i64::MAX))
                .bind(i64::try_from(seq).unwrap_or(i64::MAX))
                .bind(max_events)
                .bind(self.inner.limits.max_age.as_secs_f64())
                .fetch_all(&self.inner.pool)
                .await
                .map_err(|e| db_error(&e))?;
            let events = rows
                .into_iter()
                .filter_map(|row| row.into_event().map(Arc::new));
            Ok(replay_from(events, seq, since))
        })
    }

    fn events(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.events.subscribe()
    }
}

/// The listening side: hands notified events out in notification (commit) order.
struct Listener {
    pool: PgPool,
    events: broadcast::Sender<Arc<Event>>,
    bus: Arc<CrossBus>,
    /// The highest event id handled.
    last: i64,
    seen: HashSet<i64>,
    order: VecDeque<i64>,
}

impl Listener {
    async fn run(mut self, mut listener: PgListener) {
        let mut backoff = Duration::from_millis(50);
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    backoff = Duration::from_millis(50);
                    match notification.channel() {
                        EVENTS_CHANNEL => {
                            if let Ok(id) = notification.payload().parse::<i64>() {
                                self.fetch(sqlx::query_as(BY_ID).bind(id)).await;
                            }
                        }
                        REVOCATIONS_CHANNEL => {
                            self.bus.received(notification.payload().as_bytes());
                        }
                        _ => {}
                    }
                }
                // The connection was lost and re-made, listening again (sqlx reconnects
                // eagerly before answering `None`): catch up.
                Ok(None) => self.catch_up().await,
                Err(err) => {
                    tracing::warn!(error = %err, "realtime: the postgres listener failed");
                    // Listening again first, then the catch-up: one made before LISTEN is back
                    // would miss what commits between the two.
                    while let Err(err) = sqlx::query("SELECT 1").execute(&mut listener).await {
                        tracing::warn!(error = %err, "realtime: reconnecting the postgres listener");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                    self.catch_up().await;
                }
            }
        }
    }

    /// Replays from the table what the lost connection may have missed.
    async fn catch_up(&mut self) {
        tracing::warn!("realtime: the postgres listener reconnected; replaying from the table");
        self.bus.missed();
        self.fetch(
            sqlx::query_as(CATCH_UP)
                .bind(self.last)
                .bind(REPLAY_WINDOW_SECS),
        )
        .await;
    }

    /// Hands out the events `query` reads (in id order), each once.
    async fn fetch(
        &mut self,
        query: sqlx::query::QueryAs<'_, sqlx::Postgres, Row, sqlx::postgres::PgArguments>,
    ) {
        let rows: Vec<Row> = match query.fetch_all(&self.pool).await {
            Ok(rows) => rows,
            Err(err) => {
                tracing::warn!(error = %err, "realtime: reading an event failed");
                return;
            }
        };
        for row in rows {
            let id = row.id;
            if !self.seen.insert(id) {
                continue;
            }
            self.order.push_back(id);
            if self.order.len() > SEEN_IDS
                && let Some(old) = self.order.pop_front()
            {
                self.seen.remove(&old);
            }
            self.last = self.last.max(id);
            match row.into_event() {
                // No subscriber yet is not an error.
                Some(event) => drop(self.events.send(Arc::new(event))),
                None => tracing::warn!(id, "realtime: an undecodable event in realtime_events"),
            }
        }
    }
}
