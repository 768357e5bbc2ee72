//! SQLite connection settings.

use std::str::FromStr;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::DatabaseOptions;
use crate::{Error, Result};

pub(super) async fn connect(url: &str, options: &DatabaseOptions) -> Result<SqlitePool> {
    let connect = SqliteConnectOptions::from_str(url)
        .map_err(|e| Error::Config(format!("invalid SQLite URL: {e}")))?
        .create_if_missing(true)
        .foreign_keys(true)
        .busy_timeout(options.busy_timeout);
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let mut pool = SqlitePoolOptions::new().acquire_timeout(options.acquire_timeout);
    if in_memory {
        // Every connection to `:memory:` is a separate database: keep exactly one, forever.
        pool = pool
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
    } else {
        let path = connect.get_filename();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::Config(format!(
                    "cannot create database folder {}: {e}",
                    dir.display()
                ))
            })?;
        }
        pool = pool.max_connections(options.max_connections.max(1));
    }
    // WAL lets readers run beside the single writer; NORMAL sync is durable in WAL mode
    // except for the last transactions on power loss, the usual trade-off for a server.
    let connect = connect
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    Ok(pool.connect_with(connect).await?)
}
