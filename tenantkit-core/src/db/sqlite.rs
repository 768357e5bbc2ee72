//! SQLite connection settings: one writer, many readers.
//!
//! SQLite admits one writer at a time. Several pooled connections racing for the write lock
//! make the losers sleep in the busy handler (a fixed back-off, whatever the lock's holder is
//! doing), which is where a write's tail latency came from. So writes have one path: exactly
//! one connection, behind a fair (first come, first served) async mutex, on which they queue
//! in order without touching the lock, each taking it up front with `BEGIN IMMEDIATE`. Reads
//! use their own read-only connections (`SQLITE_OPEN_READONLY`): in WAL mode they never wait
//! for the writer, and they cannot take the write lock even by mistake.
//!
//! The writer is not a pool of one: handing a pooled connection back goes through a task the
//! pool spawns, so the next writer waited for that task on top of its own work (a `SELECT 1`
//! took 66–200 µs through a pool and 20 µs on a held connection, here). A mutex hands the
//! connection to the next writer directly; the readers are mutexes too ([`super::slots`]).
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
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::DatabaseOptions;
use super::slots::{Held, Slots};
use crate::{Error, Result};

/// The writer and the readers of one SQLite database.
#[derive(Debug, Clone)]
pub(crate) struct SqlitePools {
    /// The one connection of every read-write transaction.
    pub(crate) writer: Writer,
    /// Read-only connections for every read-only transaction; `None` for an in-memory
    /// database, whose every connection would be a database of its own: the writer serves
    /// its reads too.
    pub(crate) reader: Option<Readers>,
}

impl SqlitePools {
    pub(crate) async fn close(&self) {
        self.writer.close().await;
        if let Some(readers) = &self.reader {
            readers.close().await;
        }
    }
}

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
    fn new(conn: SqliteConnection, acquire_timeout: Duration) -> Self {
        Self {
            conn: Arc::new(Mutex::new(WriterState::new(conn))),
            acquire_timeout,
            waiting: Arc::default(),
            settling: Arc::default(),
            #[cfg(test)]
            taken_ahead: Arc::default(),
        }
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

    async fn close(&self) {
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

/// The read-only connections, each behind a mutex of its own (the pool's hand-back task is
/// what they avoid, as the writer does). Each opens on first use.
#[derive(Clone)]
pub(crate) struct Readers {
    conns: Arc<Slots<Option<SqliteConnection>>>,
    options: Arc<SqliteConnectOptions>,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers")
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl Readers {
    /// A reader connection (at most the acquire timeout, then `PoolTimedOut`).
    pub(crate) async fn acquire(&self) -> std::result::Result<ReaderGuard, sqlx::Error> {
        let mut held = self.conns.acquire().await?;
        if held.slot.is_none() {
            *held.slot = Some(self.options.connect().await?);
        }
        Ok(ReaderGuard(held))
    }

    async fn close(&self) {
        self.conns
            .close(async |conn: &mut Option<SqliteConnection>| {
                if let Some(conn) = conn.take() {
                    let _ = conn.close().await;
                }
            })
            .await;
    }
}

/// A reader connection while one request holds it.
#[doc(hidden)]
pub struct ReaderGuard(Held<Option<SqliteConnection>>);

impl std::fmt::Debug for ReaderGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReaderGuard").finish_non_exhaustive()
    }
}

impl Deref for ReaderGuard {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.0.slot.as_ref().expect("a reader is open while held")
    }
}

impl DerefMut for ReaderGuard {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.0.slot.as_mut().expect("a reader is open while held")
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
    fn state(&mut self) -> &mut WriterState {
        self.state
            .as_mut()
            .expect("a guard holds the writer until dropped")
    }

    /// Commits the transaction, if one is open. With transactions waiting for the writer, the
    /// next one is begun in the same round trip.
    pub(crate) async fn commit(mut self) -> std::result::Result<(), sqlx::Error> {
        if !self.state().in_transaction {
            return Ok(());
        }
        if self.writer.waiting.load(Ordering::Acquire) == 0
            || self.state().ahead_streak >= MAX_AHEAD_STREAK
        {
            sqlx::query("COMMIT").execute(&mut *self).await?;
            let state = self.state();
            state.in_transaction = false;
            state.ahead_streak = 0;
            return Ok(());
        }
        // One result per statement: the commit's decides this transaction; a failed
        // `BEGIN IMMEDIATE` (another process held the write lock past the busy timeout) only
        // means the next writer begins its own. (While another process holds the lock, this
        // answer waits for it, as the next writer's own `BEGIN IMMEDIATE` would have.)
        let mut results = sqlx::raw_sql("COMMIT; BEGIN IMMEDIATE").fetch_many(&mut *self);
        let committed = results.next().await;
        let begun = results.next().await;
        drop(results);
        match committed {
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(err),
            None => return Err(sqlx::Error::Protocol("COMMIT gave no result".into())),
        }
        let state = self.state();
        state.in_transaction = false;
        state.begun_ahead = matches!(begun, Some(Ok(_)));
        if state.begun_ahead {
            state.ahead_streak += 1;
            self.writer.settle_later();
        } else {
            state.ahead_streak = 0;
            if let Some(Err(err)) = begun {
                tracing::debug!(error = %err, "the next write transaction was not begun ahead");
            }
        }
        Ok(())
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

pub(super) async fn connect(url: &str, options: &DatabaseOptions) -> Result<SqlitePools> {
    let connect = SqliteConnectOptions::from_str(url)
        .map_err(|e| Error::Config(format!("invalid SQLite URL: {e}")))?
        .foreign_keys(true)
        .busy_timeout(options.busy_timeout);
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let writer = |conn: SqliteConnection| Writer::new(conn, options.acquire_timeout);
    if in_memory {
        let conn = connect.create_if_missing(true).connect().await?;
        return Ok(SqlitePools {
            writer: writer(conn),
            reader: None,
        });
    }
    let path = connect.get_filename();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Config(format!(
                "cannot create database folder {}: {e}",
                dir.display()
            ))
        })?;
    }
    // WAL lets readers run beside the single writer; NORMAL sync is durable in WAL mode
    // except for the last transactions on power loss, the usual trade-off for a server.
    let conn = connect
        .clone()
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .connect()
        .await?;
    // The file exists and is in WAL mode (a persistent setting) once the writer is open.
    // Each reader keeps a 512 KiB page cache instead of SQLite's 2 MB: the readers would
    // each cache the same hot pages, and the operating system's cache holds the file anyway
    // (10 readers: 5 MB instead of 20 MB of resident memory).
    let readers = Readers {
        conns: Arc::new(Slots::new(options.max_connections, options.acquire_timeout)),
        options: Arc::new(connect.read_only(true).pragma("cache_size", "-512")),
    };
    // One now, so that a database that cannot be read fails at start-up.
    drop(readers.acquire().await?);
    Ok(SqlitePools {
        writer: writer(conn),
        reader: Some(readers),
    })
}

#[cfg(test)]
mod tests {
    use sqlx::{ConnectOptions as _, Connection as _};

    use super::*;

    async fn database() -> (tempfile::TempDir, SqlitePools, SqliteConnectOptions) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("w.db").display());
        let pools = connect(&url, &DatabaseOptions::default())
            .await
            .expect("connect");
        let mut conn = pools.writer.lock().await.expect("lock");
        sqlx::query("CREATE TABLE t (x INTEGER NOT NULL)")
            .execute(&mut *conn)
            .await
            .expect("table");
        drop(conn);
        // Another process, as the admin commands are: it waits for the write lock (long
        // enough for any machine; the settling task ends it within milliseconds).
        let other = SqliteConnectOptions::from_str(&url)
            .expect("url")
            .busy_timeout(Duration::from_secs(120));
        (dir, pools, other)
    }

    async fn insert(conn: &mut SqliteConnection, x: i64) {
        sqlx::query("INSERT INTO t (x) VALUES ($1)")
            .bind(x)
            .execute(conn)
            .await
            .expect("insert");
    }

    async fn count(options: &SqliteConnectOptions) -> i64 {
        let mut conn = options.connect().await.expect("other connection");
        sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&mut conn)
            .await
            .expect("count")
    }

    #[tokio::test]
    async fn a_commit_with_a_writer_waiting_begins_its_transaction() {
        let (_dir, pools, other) = database().await;
        let writer = pools.writer.clone();
        let mut first = writer.begin().await.expect("begin");
        insert(&mut first, 1).await;
        let next = tokio::spawn({
            let writer = writer.clone();
            async move {
                let mut second = writer.begin().await.expect("begin");
                insert(&mut second, 2).await;
                second.commit().await.expect("commit");
            }
        });
        while writer.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        first.commit().await.expect("commit");
        next.await.expect("second writer");
        assert_eq!(writer.taken_ahead.load(Ordering::Relaxed), 1);
        assert_eq!(count(&other).await, 2, "both committed");
        // Nobody waited for the second: its commit began nothing.
        assert!(!writer.begun_ahead().await);
        pools.close().await;
    }

    #[tokio::test]
    async fn every_fifth_commit_under_sustained_writes_leaves_the_lock_free() {
        let (_dir, pools, other) = database().await;
        let writer = pools.writer.clone();
        // Writers always waiting: commits begin ahead four times in a row, then one commits
        // alone (another process's busy handler gets its chance), and the run starts again.
        let always = Waiting::new(&writer.waiting);
        for x in 0..11 {
            let mut tx = writer.begin().await.expect("begin");
            insert(&mut tx, x).await;
            tx.commit().await.expect("commit");
        }
        drop(always);
        // Begins 2-5 and 7-10 took a transaction begun ahead; 1, 6 and 11 began their own.
        assert_eq!(writer.taken_ahead.load(Ordering::Relaxed), 8);
        assert_eq!(count(&other).await, 11);
        pools.close().await;
    }

    #[tokio::test]
    async fn a_transaction_begun_ahead_for_nobody_never_keeps_others_from_writing() {
        let (_dir, pools, other) = database().await;
        let writer = pools.writer.clone();
        let begin_ahead = || async {
            let mut tx = writer.begin().await.expect("begin");
            insert(&mut tx, 1).await;
            // A writer that waits, then gives up (its request dropped) after the commit.
            let gave_up = Waiting::new(&writer.waiting);
            tx.commit().await.expect("commit");
            drop(gave_up);
            assert!(writer.begun_ahead().await);
        };

        // Another process's write waits for the write lock, which the settling task frees.
        begin_ahead().await;
        let mut process = other.connect().await.expect("other connection");
        insert(&mut process, 10).await;
        process.close().await.expect("close");
        assert!(!writer.begun_ahead().await, "settled");

        // A statement in autocommit mode ends such a transaction first, so it commits.
        begin_ahead().await;
        let mut conn = writer.lock().await.expect("lock");
        insert(&mut conn, 20).await;
        assert_eq!(count(&other).await, 4, "the statement committed by itself");
        drop(conn);

        // A transaction dropped unfinished after taking one is rolled back, as any other.
        begin_ahead().await;
        let mut dropped = writer.begin().await.expect("begin");
        insert(&mut dropped, 30).await;
        drop(dropped);
        let mut conn = writer.lock().await.expect("lock");
        insert(&mut conn, 40).await;
        drop(conn);
        let rows: Vec<i64> = {
            let mut conn = other.connect().await.expect("other connection");
            sqlx::query_scalar("SELECT x FROM t ORDER BY rowid")
                .fetch_all(&mut conn)
                .await
                .expect("rows")
        };
        assert_eq!(rows, [1, 10, 1, 20, 1, 40]);
        pools.close().await;
    }
}
