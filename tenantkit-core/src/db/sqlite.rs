//! SQLite connection settings: one writer, many readers.
//!
//! SQLite admits one writer at a time. Several pooled connections racing for the write lock
//! make the losers sleep in the busy handler (a fixed back-off, whatever the lock's holder is
//! doing), which is where a write's tail latency came from. So writes have one path: a pool
//! of exactly one connection, on which they queue in order without touching the lock, each
//! taking it up front with `BEGIN IMMEDIATE`. Reads use their own pool of read-only
//! connections (`SQLITE_OPEN_READONLY`): in WAL mode they never wait for the writer, and they
//! cannot take the write lock even by mistake.

use std::str::FromStr;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::DatabaseOptions;
use crate::{Error, Result};

/// The writer and the readers of one SQLite database.
#[derive(Debug, Clone)]
pub(crate) struct SqlitePools {
    /// Exactly one connection: every read-write transaction.
    pub(crate) writer: SqlitePool,
    /// Read-only connections: every read-only transaction. The writer itself for an in-memory
    /// database (each connection to `:memory:` is a database of its own).
    pub(crate) reader: SqlitePool,
}

impl SqlitePools {
    pub(crate) async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

pub(super) async fn connect(url: &str, options: &DatabaseOptions) -> Result<SqlitePools> {
    let connect = SqliteConnectOptions::from_str(url)
        .map_err(|e| Error::Config(format!("invalid SQLite URL: {e}")))?
        .foreign_keys(true)
        .busy_timeout(options.busy_timeout);
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    // No ping before each use: a local file's connection does not go stale, and the ping is a
    // round trip to the connection's worker thread per transaction.
    //
    // A request dropped while `BEGIN IMMEDIATE` is in flight (its client went away) can hand
    // the connection back inside a transaction that no guard will end: sqlx counts the
    // transaction as begun before its own guard exists. The check below ends any such
    // leftover before the connection is used again, so one cancelled request can never make
    // every later write fail.
    let single = || {
        SqlitePoolOptions::new()
            .before_acquire(|conn, _| {
                Box::pin(async move {
                    use sqlx::TransactionManager as _;
                    while sqlx::sqlite::SqliteTransactionManager::get_transaction_depth(conn) > 0 {
                        tracing::warn!("ending a transaction left open by a cancelled request");
                        sqlx::sqlite::SqliteTransactionManager::rollback(conn).await?;
                    }
                    Ok(true)
                })
            })
            .test_before_acquire(false)
            .acquire_timeout(options.acquire_timeout)
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    };
    if in_memory {
        let pool = single()
            .connect_with(connect.create_if_missing(true))
            .await?;
        return Ok(SqlitePools {
            writer: pool.clone(),
            reader: pool,
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
    let writer = single()
        .connect_with(
            connect
                .clone()
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal),
        )
        .await?;
    // The file exists and is in WAL mode (a persistent setting) once the writer is open.
    // Each reader keeps a 512 KiB page cache instead of SQLite's 2 MB: the readers would
    // each cache the same hot pages, and the operating system's cache holds the file anyway
    // (10 readers: 5 MB instead of 20 MB of resident memory).
    let reader = SqlitePoolOptions::new()
        .test_before_acquire(false)
        .acquire_timeout(options.acquire_timeout)
        .max_connections(options.max_connections.max(1))
        .connect_with(connect.read_only(true).pragma("cache_size", "-512"))
        .await?;
    Ok(SqlitePools { writer, reader })
}
