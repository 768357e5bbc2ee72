//! The single writer connection, behind a fair async mutex.
//!
//! Every statement is a round trip to the thread sqlx runs the connection on (two thread
//! wake-ups), and writers queue for the one connection, so under load a write transaction's
//! round trips are what bounds the write rate, not CPU (a create measured 2,271/s with the
//! writer's thread 40 % busy and the machine 55 % idle). So a commit that has transactions
//! waiting begins the next one in the same round trip (`COMMIT; BEGIN IMMEDIATE`): the next
//! writer starts without a round trip of its own. Such a transaction begun ahead holds the
//! write lock for nobody if its writer gave up waiting; a settling task ends it when the
//! writer stays idle ([`SETTLE_AFTER`]), so other processes (the admin commands) can write.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use sqlx::Connection as _;
use sqlx::sqlite::SqliteConnection;
use tokio::sync::{Mutex, OwnedMutexGuard};

/// How long a transaction begun ahead may wait unused before a settling task ends it.
const SETTLE_AFTER: Duration = Duration::from_millis(20);

/// At most this many commits in a row begin the next transaction ahead; the next one commits
/// alone. Between a `COMMIT; BEGIN IMMEDIATE` the write lock is free for microseconds only,
/// so under sustained writes another process (an admin command, in SQLite's busy handler)
/// would rarely get it; a plain commit leaves it free for a round trip.
const MAX_AHEAD_STREAK: u8 = 4;

/// The single writer connection, behind a fair async mutex.
#[derive(Clone)]
pub(crate) struct Writer {
    conn: Arc<Mutex<WriterState>>,
    acquire_timeout: Duration,
    /// Transactions waiting for the connection (a commit begins the next one ahead when
    /// there are any).
    waiting: Arc<AtomicUsize>,
    /// A settling task is scheduled.
    settling: Arc<AtomicBool>,
    /// Wakes this process's listeners after commits that wrote outbox messages (SQLite has no
    /// `NOTIFY`).
    notifier: crate::outbox::LocalNotifier,
    /// How many transactions started on one begun ahead.
    #[cfg(test)]
    taken_ahead: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

struct WriterState {
    /// `None` once closed.
    conn: Option<SqliteConnection>,
    /// A transaction was begun and neither committed nor rolled back yet.
    in_transaction: bool,
    /// The connection is inside a `BEGIN IMMEDIATE` that the last commit began for the next
    /// transaction, unused so far (then `in_transaction` is `false`).
    begun_ahead: bool,
    /// Commits in a row that began the next transaction ahead.
    ahead_streak: u8,
}

impl WriterState {
    fn new(conn: SqliteConnection) -> Self {
        Self {
            conn: Some(conn),
            in_transaction: false,
            begun_ahead: false,
            ahead_streak: 0,
        }
    }

    /// Rolls back a transaction begun ahead, if there is one. It counts as left open until the
    /// rollback is done, so after a failure (or a cancellation) the next holder rolls back
    /// first and never writes inside it.
    async fn end_begun_ahead(&mut self) -> std::result::Result<(), sqlx::Error> {
        if !std::mem::take(&mut self.begun_ahead) {
            return Ok(());
        }
        self.ahead_streak = 0;
        self.in_transaction = true;
        let conn = self.conn.as_mut().ok_or(sqlx::Error::PoolClosed)?;
        rollback(conn).await?;
        self.in_transaction = false;
        Ok(())
    }
}

/// Counts a transaction waiting for the writer while it lives (also when its request is
/// dropped while it waits).
struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(count))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Writer {
    pub(super) fn new(conn: SqliteConnection, acquire_timeout: Duration) -> Self {
        Self {
            conn: Arc::new(Mutex::new(WriterState::new(conn))),
            acquire_timeout,
            waiting: Arc::default(),
            settling: Arc::default(),
            notifier: crate::outbox::LocalNotifier::default(),
            #[cfg(test)]
            taken_ahead: Arc::default(),
        }
    }

    /// The in-process notifier of this database.
    pub(crate) fn notifier(&self) -> &crate::outbox::LocalNotifier {
        &self.notifier
    }

    /// The connection in autocommit mode, waiting in line (at most the acquire timeout, then
    /// `PoolTimedOut`, as a pool would answer). A transaction a cancelled request left open,
    /// or one begun ahead, is rolled back first.
    pub(crate) async fn lock(&self) -> std::result::Result<WriterGuard, sqlx::Error> {
        let mut guard = self.acquire().await?;
        guard.state().end_begun_ahead().await?;
        Ok(guard)
    }

    /// The connection inside `BEGIN IMMEDIATE`: the write lock is taken up front (or was, by
    /// the previous commit).
    pub(crate) async fn begin(&self) -> std::result::Result<WriterGuard, sqlx::Error> {
        let waiting = Waiting::new(&self.waiting);
        let mut guard = self.acquire().await?;
        drop(waiting);
        let state = guard.state();
        // Marked first: a request dropped while `BEGIN` is in flight still rolls it back.
        state.in_transaction = true;
        if std::mem::take(&mut state.begun_ahead) {
            #[cfg(test)]
            self.taken_ahead.fetch_add(1, Ordering::Relaxed);
            return Ok(guard);
        }
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *guard).await?;
        Ok(guard)
    }

    /// The connection as its last holder left it, but never inside a transaction that holder
    /// began (rolled back first).
    async fn acquire(&self) -> std::result::Result<WriterGuard, sqlx::Error> {
        let mut state = tokio::time::timeout(self.acquire_timeout, self.conn.clone().lock_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?;
        let left_open = state.in_transaction;
        let conn = state.conn.as_mut().ok_or(sqlx::Error::PoolClosed)?;
        if left_open {
            tracing::warn!("ending a transaction left open by a cancelled request");
            rollback(conn).await?;
            state.in_transaction = false;
        }
        Ok(WriterGuard {
            state: Some(state),
            writer: self.clone(),
        })
    }

    /// Ends a transaction begun ahead that is still unused once nobody holds or waits for the
    /// writer (looking every [`SETTLE_AFTER`]; one settling task at a time).
    fn settle_later(&self) {
        if self.settling.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Without a runtime the next `lock` or `begin` deals with it.
            self.settling.store(false, Ordering::Release);
            return;
        };
        let writer = self.clone();
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(SETTLE_AFTER).await;
                // Held, or waited for (the mutex hands itself to a waiter first): look again.
                let Ok(mut state) = writer.conn.clone().try_lock_owned() else {
                    continue;
                };
                // Cleared while holding the writer, so no commit can begin ahead unseen.
                writer.settling.store(false, Ordering::Release);
                if let Err(err) = state.end_begun_ahead().await {
                    // Marked as left open: the next holder rolls back first.
                    tracing::warn!(error = %err, "ending an unused transaction failed");
                }
                return;
            }
        });
    }

    #[cfg(test)]
    async fn begun_ahead(&self) -> bool {
        self.conn.lock().await.begun_ahead
    }

    pub(super) async fn close(&self) {
        let mut state = self.conn.lock().await;
        if let Some(conn) = state.conn.take() {
            let _ = conn.close().await;
        }
    }
}

/// Ends the connection's transaction; also fine when there is none left (its `COMMIT` ran
/// before the request that began it was dropped).
async fn rollback(conn: &mut SqliteConnection) -> std::result::Result<(), sqlx::Error> {
    match sqlx::query("ROLLBACK").execute(&mut *conn).await {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(err)) if err.message().contains("no transaction is active") => {
            Ok(())
        }
        Err(err) => Err(err),
    }
}

/// The writer connection while one request holds it. Dropped inside a transaction (an error,
/// a cancelled request), the transaction is rolled back before the next request gets the
/// connection.
#[doc(hidden)]
pub struct WriterGuard {
    state: Option<OwnedMutexGuard<WriterState>>,
    writer: Writer,
}

impl std::fmt::Debug for WriterGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterGuard").finish_non_exhaustive()
    }
}

impl WriterGuard {
    /// The in-process notifier of this database.
    pub(crate) fn notifier(&self) -> &crate::outbox::LocalNotifier {
        self.writer.notifier()
    }

    fn state(&mut self) -> &mut WriterState {
        self.state
            .as_mut()
            .expect("a guard holds the writer until dropped")
    }

    /// Commits the transaction, if one is open. With transactions waiting for the writer (and
    /// fewer than [`MAX_AHEAD_STREAK`] begun ahead in a row), the next one is begun in the
    /// same round trip.
    pub(crate) async fn commit(mut self) -> std::result::Result<(), sqlx::Error> {
        if !self.state().in_transaction {
            return Ok(());
        }
        let ahead = self.writer.waiting.load(Ordering::Acquire) > 0
            && self.state().ahead_streak < MAX_AHEAD_STREAK;
        let begun = if ahead {
            self.commit_and_begin().await?
        } else {
            sqlx::query("COMMIT").execute(&mut *self).await?;
            false
        };
        let state = self.state();
        state.in_transaction = false;
        state.begun_ahead = begun;
        state.ahead_streak = if begun { state.ahead_streak + 1 } else { 0 };
        if begun {
            self.writer.settle_later();
        }
        Ok(())
    }

    /// `COMMIT; BEGIN IMMEDIATE` in one round trip, one result per statement: the commit's
    /// decides this transaction; a failed `BEGIN IMMEDIATE` (another process held the write
    /// lock past the busy timeout) only means the next writer begins its own. Whether the
    /// next transaction was begun. (While another process holds the lock, this answer waits
    /// for it, as the next writer's own `BEGIN IMMEDIATE` would have.)
    async fn commit_and_begin(&mut self) -> std::result::Result<bool, sqlx::Error> {
        let mut results = sqlx::raw_sql("COMMIT; BEGIN IMMEDIATE").fetch_many(&mut **self);
        match results.next().await {
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(err),
            None => return Err(sqlx::Error::Protocol("COMMIT gave no result".into())),
        }
        match results.next().await {
            Some(Ok(_)) => Ok(true),
            Some(Err(err)) => {
                tracing::debug!(error = %err, "the next write transaction was not begun ahead");
                Ok(false)
            }
            None => Ok(false),
        }
    }
}

impl Deref for WriterGuard {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.state
            .as_ref()
            .and_then(|state| state.conn.as_ref())
            .expect("a guard holds an open writer until dropped")
    }
}

impl DerefMut for WriterGuard {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.state()
            .conn
            .as_mut()
            .expect("a guard holds an open writer until dropped")
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        let Some(mut state) = self.state.take() else {
            return;
        };
        if !state.in_transaction {
            return;
        }
        // The rollback runs on a task that keeps the connection until it is done, so the
        // next writer finds it clean. Without a runtime the next `lock` rolls back.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // On failure the mark stays: the next `lock` tries again, and refuses the
                // connection while it may still be inside this transaction.
                if let Some(conn) = state.conn.as_mut()
                    && rollback(conn).await.is_ok()
                {
                    state.in_transaction = false;
                }
            });
        }
    }
}

#[cfg(test)]
mod tests;
