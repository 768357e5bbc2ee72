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
//! The writer, and how a commit begins the next writer's transaction, are in [`writer`].

mod writer;

use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::Arc;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions as _, Connection as _};

pub(crate) use writer::{Writer, WriterGuard};

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
