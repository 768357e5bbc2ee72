//! The worker: claims stored events (in batches, under leases; `FOR UPDATE SKIP LOCKED` on
//! PostgreSQL), routes them to handlers inside the transaction that marks them done, and
//! retries failures with backoff and jitter until they become dead letters.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use time::{Duration, OffsetDateTime};

use tenantkit_core::{Backend, Database, SystemTx, with_conn};

use crate::inbox::{Row, StoredEvent, columns, event_of};
use crate::{HandlerError, Result};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Handles events of the types it was registered for, inside the transaction that also
/// marks the event done: its database effects commit exactly once with that mark.
///
/// The transaction is the system's; to write rows of the event's tenant, act in it with
/// [`SystemTx::in_tenant`] (and [`leave`](tenantkit_core::InTenant::leave) it before
/// returning: a handle dropped without `leave` poisons the transaction, and the worker then
/// treats the attempt as failed).
pub trait EventHandler: std::fmt::Debug + Send + Sync + 'static {
    /// Handles `event`; an error rolls back its effects and schedules a retry (or, for a
    /// [permanent](HandlerError::permanent) one, makes the event a dead letter at once).
    fn handle<'a>(
        &'a self,
        tx: &'a mut SystemTx,
        event: &'a StoredEvent,
    ) -> BoxFuture<'a, std::result::Result<(), HandlerError>>;
}

/// Event types → handlers. Types without a handler are acknowledged and marked done.
#[derive(Debug, Clone, Default)]
pub struct EventRouter {
    handlers: HashMap<String, Vec<Arc<dyn EventHandler>>>,
}

impl EventRouter {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes `event_type` to `handler` too.
    pub fn on(mut self, event_type: &str, handler: Arc<dyn EventHandler>) -> Self {
        self.handlers
            .entry(event_type.to_owned())
            .or_default()
            .push(handler);
        self
    }
}

/// What [`Worker::run_once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was due.
    Idle,
    /// The event was handled.
    Done(String),
    /// A handler failed; the event will be retried.
    Retry(String),
    /// A handler failed for the last time; the event is a dead letter.
    Dead(String),
    /// The handlers took longer than the claim's lease and another worker took the event
    /// over: this attempt's effects were rolled back (the other attempt's count).
    Superseded(String),
}

/// Claims due events and routes them.
#[derive(Debug, Clone)]
pub struct Worker {
    db: Database,
    router: Arc<EventRouter>,
    /// How long a claim lasts before another worker may take the event over.
    pub lease: Duration,
    /// Attempts before an event becomes a dead letter.
    pub max_attempts: i32,
    /// The first retry's delay (doubling each time, with jitter).
    pub backoff: Duration,
    /// Events claimed per claim transaction (handled one by one, each in its own
    /// transaction, before the next claim). A claimed event not yet handled when its lease
    /// ends is left to whichever worker claims it then.
    pub batch: usize,
    /// How long [`Worker::run`] waits after finding nothing due (default 500 ms).
    pub idle_interval: std::time::Duration,
    /// How long [`Worker::run`] waits after a database error before trying again (default
    /// 1 s).
    pub error_backoff: std::time::Duration,
    /// Claimed events not handled yet, with the end of their lease.
    claimed: Arc<std::sync::Mutex<std::collections::VecDeque<(StoredEvent, OffsetDateTime)>>>,
    stats: WorkerStats,
}

/// What a [`Worker`] (and its clones) did so far: counters for metrics, readable while it
/// runs. A cheap handle ([`Worker::stats`]); every count only grows.
#[derive(Debug, Clone, Default)]
pub struct WorkerStats {
    inner: Arc<WorkerCounters>,
}

#[derive(Debug, Default)]
struct WorkerCounters {
    handled: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    superseded: AtomicU64,
    idle_polls: AtomicU64,
    failures: AtomicU64,
}

impl WorkerStats {
    /// Events handled and marked done.
    pub fn handled(&self) -> u64 {
        self.inner.handled.load(Ordering::Relaxed)
    }

    /// Handler failures scheduled for another attempt.
    pub fn retried(&self) -> u64 {
        self.inner.retried.load(Ordering::Relaxed)
    }

    /// Events that failed their last attempt and became dead letters.
    pub fn dead_lettered(&self) -> u64 {
        self.inner.dead_lettered.load(Ordering::Relaxed)
    }

    /// Attempts rolled back because another worker took the event over after the lease.
    pub fn superseded(&self) -> u64 {
        self.inner.superseded.load(Ordering::Relaxed)
    }

    /// Polls that found nothing due.
    pub fn idle_polls(&self) -> u64 {
        self.inner.idle_polls.load(Ordering::Relaxed)
    }

    /// Polls that failed with a database error (the worker carries on).
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    fn count(&self, outcome: &Result<Outcome>) {
        let counter = match outcome {
            Ok(Outcome::Idle) => &self.inner.idle_polls,
            Ok(Outcome::Done(_)) => &self.inner.handled,
            Ok(Outcome::Retry(_)) => &self.inner.retried,
            Ok(Outcome::Dead(_)) => &self.inner.dead_lettered,
            Ok(Outcome::Superseded(_)) => &self.inner.superseded,
            Err(_) => &self.inner.failures,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl Worker {
    /// A worker over `db` with `router`: 60 s leases, 18 attempts, a 1 s first backoff
    /// doubling up to 6 hours (plus up to half again of jitter; about 21 hours in all: an
    /// event waiting for one it depends on outlives any realistic delay, and Stripe itself
    /// retries for 3 days). The short first delay is for the common case: Stripe delivers
    /// `customer.subscription.created` before the `checkout.session.completed` that names
    /// its tenant, and the plan should follow within seconds, not a minute.
    pub fn new(db: Database, router: EventRouter) -> Self {
        Self {
            db,
            router: Arc::new(router),
            lease: Duration::seconds(60),
            max_attempts: 18,
            backoff: Duration::seconds(1),
            batch: 16,
            idle_interval: std::time::Duration::from_millis(500),
            error_backoff: std::time::Duration::from_secs(1),
            claimed: Arc::default(),
            stats: WorkerStats::default(),
        }
    }

    /// The counters of this worker and its clones, readable while [`Worker::run`] runs.
    pub fn stats(&self) -> WorkerStats {
        self.stats.clone()
    }

    /// Handles due events until `shutdown` completes: one [`Worker::run_once`] after another,
    /// waiting [`Worker::idle_interval`] when nothing is due and [`Worker::error_backoff`]
    /// after a database error (logged and counted in [`WorkerStats::failures`]; the loop
    /// carries on).
    ///
    /// Shutdown is seen between events and during the waits: an event being handled when it
    /// completes is finished first (its handlers and the mark commit together), so `run`
    /// returns once that event is done. To bound that wait, drop the future (or abort its
    /// task) after a deadline: the event in flight is then rolled back with its transaction
    /// and claimed again after its lease, by this process's next start or another instance,
    /// so nothing acknowledged is lost. Events claimed in the current batch but not started
    /// are likewise taken over after their lease.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut stopping = false;
        while !stopping {
            // Checked before each event: a completed shutdown stops here.
            if futures_poll_ready(shutdown.as_mut()).await {
                break;
            }
            let outcome = self.run_once(tenantkit_core::now()).await;
            let wait = match &outcome {
                Ok(Outcome::Idle) => Some(self.idle_interval),
                Ok(_) => None,
                Err(err) => {
                    tracing::warn!(error = %err, "billing worker failed; retrying");
                    Some(self.error_backoff)
                }
            };
            if let Some(wait) = wait {
                tokio::select! {
                    () = shutdown.as_mut() => stopping = true,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }

    /// The next claimed event whose lease still holds at `now`, claiming a batch when none is
    /// left.
    async fn next(&self, now: OffsetDateTime) -> Result<Option<StoredEvent>> {
        loop {
            let next = self
                .claimed
                .lock()
                .map(|mut q| q.pop_front())
                .unwrap_or(None);
            match next {
                Some((event, until)) if until > now => return Ok(Some(event)),
                Some(_) => continue, // its lease ran out: another worker may hold it now
                None => {}
            }
            let events = self.claim(now).await?;
            if events.is_empty() {
                return Ok(None);
            }
            let until = now + self.lease;
            self.claimed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend(events.into_iter().map(|event| (event, until)));
        }
    }

    /// The delay before attempt `attempts + 1`.
    fn delay(&self, event_id: &str, attempts: i32) -> Duration {
        let exponent = u32::try_from(attempts.clamp(1, 20) - 1).unwrap_or(0);
        let base = (self.backoff * 2i32.pow(exponent.min(16))).min(Duration::hours(6));
        base + base * f64::from(jitter_fraction(event_id, attempts))
    }

    /// Handles one due event (pending and due, or processing with an expired lease: its
    /// worker died), oldest first; claims up to [`Worker::batch`] of them at a time.
    ///
    /// # Errors
    /// Database errors (handler errors become retries).
    pub async fn run_once(&self, now: OffsetDateTime) -> Result<Outcome> {
        let outcome = self.handle_next(now).await;
        self.stats.count(&outcome);
        outcome
    }

    async fn handle_next(&self, now: OffsetDateTime) -> Result<Outcome> {
        let Some(event) = self.next(now).await? else {
            return Ok(Outcome::Idle);
        };
        let handlers = self
            .router
            .handlers
            .get(&event.event_type)
            .cloned()
            .unwrap_or_default();
        let mut tx = self.db.begin_system().await?;
        let mut failure = None;
        for handler in &handlers {
            if let Err(err) = handler.handle(&mut tx, &event).await {
                failure = Some(err);
                break;
            }
        }
        if failure.is_none() && tx.is_aborted() {
            // The commit would refuse, and the event would come back after its lease without
            // ever counting as a failure: a failed attempt, retried and dead-lettered in turn.
            failure = Some(HandlerError::new(
                "a handler returned Ok but its transaction is aborted (a statement failed, or \
                 an InTenant was dropped without leave())",
            ));
        }
        match failure {
            None => {
                // Only while this claim holds (its attempt number): after the lease another
                // worker may have taken the event over, and then this attempt's effects roll
                // back instead of committing a second time.
                let marked = with_conn!(&mut tx, |c| {
                    sqlx::query(
                        "UPDATE billing_events SET state = 'done', processed_at = $2, \
                         lease_until = NULL, last_error = NULL \
                         WHERE event_id = $1 AND state = 'processing' AND attempts = $3",
                    )
                    .bind(&event.event_id)
                    .bind(now)
                    .bind(event.attempts)
                    .execute(c)
                    .await
                    .map(|done| done.rows_affected())
                })?;
                if marked == 0 {
                    drop(tx);
                    tracing::warn!(
                        event = %event.event_id,
                        "another worker took the event over after this claim's lease; rolled back"
                    );
                    return Ok(Outcome::Superseded(event.event_id));
                }
                tx.commit().await?;
                Ok(Outcome::Done(event.event_id))
            }
            Some(error) => {
                drop(tx); // rolls the handlers' effects back
                let dead = error.is_permanent() || event.attempts >= self.max_attempts;
                let next = now + self.delay(&event.event_id, event.attempts);
                let mut tx = self.db.begin_system().await?;
                let marked = with_conn!(&mut tx, |c| {
                    sqlx::query(
                        "UPDATE billing_events SET state = $2, next_attempt_at = $3, \
                         lease_until = NULL, last_error = $4 \
                         WHERE event_id = $1 AND state = 'processing' AND attempts = $5",
                    )
                    .bind(&event.event_id)
                    .bind(if dead { "dead" } else { "pending" })
                    .bind(next)
                    .bind(error.message().chars().take(1000).collect::<String>())
                    .bind(event.attempts)
                    .execute(c)
                    .await
                    .map(|done| done.rows_affected())
                })?;
                tx.commit().await?;
                if marked == 0 {
                    // Another worker holds the event now; its attempt decides.
                    return Ok(Outcome::Superseded(event.event_id));
                }
                tracing::warn!(
                    event = %event.event_id,
                    attempts = event.attempts,
                    dead,
                    error = %error,
                    "billing handler failed"
                );
                Ok(if dead {
                    Outcome::Dead(event.event_id)
                } else {
                    Outcome::Retry(event.event_id)
                })
            }
        }
    }

    /// Claims up to `batch` due events, oldest first.
    async fn claim(&self, now: OffsetDateTime) -> Result<Vec<StoredEvent>> {
        let backend = self.db.backend();
        // PostgreSQL: SKIP LOCKED, so several instances' workers never take the same event;
        // SQLite: the single writer serializes claims.
        let lock = if backend == Backend::Postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE billing_events SET state = 'processing', attempts = attempts + 1, \
             lease_until = $2 WHERE event_id IN (SELECT event_id FROM billing_events \
             WHERE state IN ('pending', 'processing') \
               AND ((state = 'pending' AND next_attempt_at <= $1) \
                OR (state = 'processing' AND lease_until < $1)) \
             ORDER BY created, event_id LIMIT {}{lock}) RETURNING {}",
            self.batch.clamp(1, 1000),
            columns(backend)
        );
        let mut tx = self.db.begin_system().await?;
        if backend == Backend::Postgres {
            // Walk the open-events index in order, whatever the statistics say: before the
            // table is first analyzed (a fresh inbox filling up), PostgreSQL estimates one
            // open row and sorts the whole backlog for every claim instead (measured: 59 ms
            // a claim, 12 events/s, at 45k pending). For this transaction only.
            with_conn!(&mut tx, |c| {
                sqlx::query(
                    "SELECT set_config('enable_sort', 'off', true), \
                     set_config('enable_bitmapscan', 'off', true)",
                )
                .execute(c)
                .await
                .map(drop)
            })?;
        }
        let rows: Vec<Row> = with_conn!(&mut tx, |c| {
            sqlx::query_as(&sql)
                .bind(now)
                .bind(now + self.lease)
                .fetch_all(c)
                .await
        })?;
        tx.commit().await?;
        let mut events: Vec<StoredEvent> = rows.into_iter().map(event_of).collect();
        // RETURNING has no order.
        events.sort_by(|a, b| (a.created, &a.event_id).cmp(&(b.created, &b.event_id)));
        Ok(events)
    }
}

/// Whether `future` is already complete, polling it once (without waiting).
async fn futures_poll_ready<F: Future<Output = ()>>(future: Pin<&mut F>) -> bool {
    let mut future = Some(future);
    std::future::poll_fn(|cx| {
        let ready = future
            .as_mut()
            .is_some_and(|f| f.as_mut().poll(cx).is_ready());
        std::task::Poll::Ready(ready)
    })
    .await
}

/// A deterministic fraction in [0, 0.5) from the event and attempt (spreads retries without
/// a random source).
fn jitter_fraction(event_id: &str, attempt: i32) -> f32 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{event_id}:{attempt}").as_bytes());
    f32::from(digest[0]) / 512.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default schedule: a retry within 1.5 s first (an event waiting for its checkout
    /// session), then doubling, capped at 6 hours (9 with jitter), about a day in all.
    #[tokio::test]
    async fn the_default_backoff_retries_soon_then_for_about_a_day() {
        let db = Database::connect("sqlite::memory:").await.expect("db");
        let worker = Worker::new(db, EventRouter::new());
        let delays: Vec<Duration> = (1..worker.max_attempts)
            .map(|attempt| worker.delay("evt_1", attempt))
            .collect();
        assert!(delays[0] >= Duration::seconds(1) && delays[0] < Duration::milliseconds(1500));
        assert!(delays.windows(2).all(|pair| pair[1] >= pair[0] / 2));
        assert!(delays.iter().all(|delay| *delay < Duration::hours(9)));
        let total: Duration = delays.iter().copied().sum();
        assert!(
            total > Duration::hours(21) && total < Duration::hours(32),
            "{total}"
        );
    }
}
