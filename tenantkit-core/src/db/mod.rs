//! The database handle: one type over the SQLite and PostgreSQL backends.
//!
//! Raw pool access lives here only; everything above works through the transactions of
//! [`crate::sql`].

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod slots;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "postgres")]
pub(crate) use postgres::PgConn;
#[cfg(feature = "sqlite")]
pub(crate) use sqlite::{ReaderGuard, WriterGuard};

use std::fmt;
use std::time::Duration;

use crate::sql::{Conn, SystemTx, TenantTx, UserTx};
use crate::{Error, Migrations, Result, TenantScope, UserId};

/// Which database engine a [`Database`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// Embedded SQLite (WAL mode).
    Sqlite,
    /// PostgreSQL with row-level security.
    Postgres,
}

impl Backend {
    /// Every backend this build of tenantkit-core was compiled with (its `sqlite` and
    /// `postgres` features), SQLite first.
    pub const COMPILED: &'static [Backend] = &[
        #[cfg(feature = "sqlite")]
        Backend::Sqlite,
        #[cfg(feature = "postgres")]
        Backend::Postgres,
    ];
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// How to connect. `Default` is the secure, production configuration.
#[derive(Debug, Clone)]
pub struct DatabaseOptions {
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// How long a request waits for a free connection before failing.
    pub acquire_timeout: Duration,
    /// SQLite: how long a writer waits for the write lock.
    pub busy_timeout: Duration,
    /// PostgreSQL: refuse to start when the connecting role could bypass row-level security
    /// (superuser, `BYPASSRLS`, or owner of the tenant tables), or when a registered tenant
    /// table (tenantkit's own, and those the application registered; see [`crate::migrate`])
    /// is not behind row-level security. On by default.
    pub require_rls_safe_role: bool,
}

impl Default for DatabaseOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(5),
            require_rls_safe_role: true,
        }
    }
}

impl DatabaseOptions {
    /// Options for the connection that applies migrations, which on PostgreSQL must be the
    /// owner of the tables and therefore is *not* RLS-safe. Never serve requests with it.
    pub fn for_migrations() -> Self {
        Self {
            max_connections: 1,
            require_rls_safe_role: false,
            ..Self::default()
        }
    }
}

/// A pool of connections to one database, SQLite or PostgreSQL. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    pub(crate) audit: crate::audit::AuditSetup,
}

#[derive(Clone)]
pub(crate) enum Pool {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlite::SqlitePools),
    #[cfg(feature = "postgres")]
    Postgres(postgres::PgConnections),
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password, so only the backend is shown.
        f.debug_struct("Database")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

/// Whether a transaction may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    ReadWrite,
    ReadOnly,
    /// One write statement. SQLite: on the writer connection in autocommit mode (the
    /// statement, its triggers included, is atomic on its own). PostgreSQL: as `ReadWrite`.
    Statement,
}

/// The PostgreSQL settings a transaction kind runs under (transaction-local).
#[derive(Debug, Clone, Copy)]
// SQLite builds ignore the settings: it has no row-level security.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) enum Settings<'a> {
    Tenant(&'a str),
    User(&'a str),
    System,
}

impl Database {
    /// Connects with the default, secure [`DatabaseOptions`].
    ///
    /// `url` is `sqlite://path/to/file.db` (created with its folder if missing),
    /// `sqlite::memory:`, or `postgres://user:pass@host/db`.
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown scheme or (PostgreSQL) an RLS-unsafe role or a
    /// registered tenant table without row-level security (named in the message, with the
    /// call that fixes it); [`Error::Database`] when the
    /// database cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, &DatabaseOptions::default()).await
    }

    /// Connects with explicit options.
    ///
    /// # Errors
    /// As [`Database::connect`].
    #[tracing::instrument(skip_all, fields(backend))]
    pub async fn connect_with(url: &str, options: &DatabaseOptions) -> Result<Self> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        tracing::Span::current().record("backend", scheme);
        let pool = match scheme {
            #[cfg(feature = "sqlite")]
            "sqlite" => Pool::Sqlite(sqlite::connect(url, options).await?),
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => {
                let pool = postgres::connect(url, options).await?;
                if options.require_rls_safe_role {
                    postgres::check_rls_safe(&pool).await?;
                }
                Pool::Postgres(pool)
            }
            _ => {
                return Err(Error::Config(format!(
                    "unsupported database URL scheme `{scheme}`; this build supports: {}",
                    Self::supported_schemes()
                )));
            }
        };
        // SQLite's appends run one at a time on the one writer, so the chain head each one
        // leaves behind is worth remembering (see `ChainHeads`).
        let heads = match &pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(_) => Some(std::sync::Arc::default()),
            #[allow(unreachable_patterns)] // Only when both backends are built.
            _ => None,
        };
        Ok(Self {
            pool,
            audit: crate::audit::AuditSetup { key: None, heads },
        })
    }

    /// Anchors every audit entry written through this handle with `key` (see
    /// [`crate::AuditKey`]).
    pub fn with_audit_key(mut self, key: crate::AuditKey) -> Self {
        self.audit.key = Some(key);
        self
    }

    fn supported_schemes() -> &'static str {
        match (cfg!(feature = "sqlite"), cfg!(feature = "postgres")) {
            (true, true) => "sqlite, postgres",
            (true, false) => "sqlite",
            _ => "postgres",
        }
    }

    /// The connections, for the crate's own backend-specific work.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        match &self.pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(_) => Backend::Sqlite,
            #[cfg(feature = "postgres")]
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Connects to `owner_url` as the role that owns the tables (one connection,
    /// [`DatabaseOptions::for_migrations`]), applies `migrations` ([`Database::migrate`]) and
    /// closes the connection: the start-up step before [`Database::connect`] serves requests as
    /// the application role (on SQLite, both URLs are usually the same file).
    ///
    /// # Errors
    /// As [`Database::connect_with`] and [`Database::migrate`].
    pub async fn migrate_at(owner_url: &str, migrations: &Migrations) -> Result<()> {
        let owner = Self::connect_with(owner_url, &DatabaseOptions::for_migrations()).await?;
        let result = owner.migrate(migrations).await;
        owner.close().await;
        result
    }

    /// Applies every migration of `migrations` that is not applied yet (see
    /// [`Migrations`]).
    ///
    /// On PostgreSQL, run this on a connection made with [`DatabaseOptions::for_migrations`]
    /// as the role that owns the tables, not as the application role.
    ///
    /// # Errors
    /// [`Error::Migrate`] when a migration fails or an applied one was edited;
    /// [`Error::Config`] when two sets claim one version.
    #[tracing::instrument(skip_all, fields(backend = %self.backend()))]
    pub async fn migrate(&self, migrations: &Migrations) -> Result<()> {
        match &self.pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pools) => {
                let mut conn = pools.writer.lock().await?;
                crate::migrate::apply_sqlite(migrations, &mut conn).await?;
            }
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => {
                let mut conn = pool.raw().await?;
                crate::migrate::apply_postgres(migrations, &mut conn).await?;
                conn.release();
            }
        }
        tracing::info!(sets = %migrations.names().join(", "), "database migrations applied");
        Ok(())
    }

    /// Checks that the database answers, for readiness probes.
    ///
    /// # Errors
    /// [`Error::Database`] when it does not.
    pub async fn ping(&self) -> Result<()> {
        match &self.pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pools) => {
                // Both paths: a request may need either.
                if let Some(readers) = &pools.reader {
                    let mut reader = readers.acquire().await?;
                    sqlx::query("SELECT 1").execute(&mut *reader).await?;
                }
                let mut writer = pools.writer.lock().await?;
                sqlx::query("SELECT 1")
                    .execute(&mut *writer)
                    .await
                    .map(drop)?
            }
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => {
                let mut conn = pool.raw().await?;
                sqlx::query("SELECT 1").execute(&mut *conn).await?;
                conn.release();
            }
        };
        Ok(())
    }

    /// Begins a read-write transaction scoped to one tenant.
    ///
    /// On SQLite every read-write transaction runs on the one writer connection, taking the
    /// write lock up front (`BEGIN IMMEDIATE`): concurrent writers queue for that connection,
    /// in order, and never sleep in the busy handler. On PostgreSQL the
    /// tenant is set for row-level security for this transaction only.
    ///
    /// # Errors
    /// [`Error::Database`] when no connection can be had.
    pub async fn begin(&self, scope: &TenantScope) -> Result<TenantTx> {
        self.begin_tenant(scope, Mode::ReadWrite).await
    }

    /// Begins a read-only transaction scoped to one tenant (PostgreSQL: `READ ONLY`, and
    /// its `COMMIT`, which has nothing to write, is sent with the connection's next `BEGIN`
    /// or within 20 ms; SQLite: a read-only connection in autocommit, each statement one
    /// snapshot, that never blocks the writer).
    ///
    /// # Errors
    /// [`Error::Database`] when no connection can be had.
    pub async fn begin_read(&self, scope: &TenantScope) -> Result<TenantTx> {
        self.begin_tenant(scope, Mode::ReadOnly).await
    }

    async fn begin_tenant(&self, scope: &TenantScope, mode: Mode) -> Result<TenantTx> {
        let tenant = scope.tenant_id().to_string();
        let conn = self.begin_conn(mode, Settings::Tenant(&tenant)).await?;
        Ok(TenantTx::new(*scope, conn, self.audit.clone()))
    }

    /// Begins a read-write transaction that sees one user's rows across tenants.
    ///
    /// # Errors
    /// [`Error::Database`] when no connection can be had.
    pub async fn begin_user(&self, user: UserId) -> Result<UserTx> {
        let setting = user.to_string();
        let conn = self
            .begin_conn(Mode::ReadWrite, Settings::User(&setting))
            .await?;
        Ok(UserTx::new(user, conn))
    }

    /// Begins a read-only transaction that sees one user's rows across tenants.
    ///
    /// # Errors
    /// [`Error::Database`] when no connection can be had.
    pub async fn begin_user_read(&self, user: UserId) -> Result<UserTx> {
        let setting = user.to_string();
        let conn = self
            .begin_conn(Mode::ReadOnly, Settings::User(&setting))
            .await?;
        Ok(UserTx::new(user, conn))
    }

    /// Begins a read-write transaction of the system itself (see [`SystemTx`]).
    ///
    /// # Errors
    /// [`Error::Database`] when no connection can be had.
    pub async fn begin_system(&self) -> Result<SystemTx> {
        Ok(SystemTx::new(
            self.begin_conn(Mode::ReadWrite, Settings::System).await?,
            self.audit.clone(),
        ))
    }

    /// A system transaction for exactly **one** write statement (see [`SystemTx`]).
    ///
    /// On SQLite the statement runs on the writer connection without `BEGIN` and `COMMIT`:
    /// one statement is atomic by itself, its triggers included, so it holds the single writer
    /// for one round trip instead of three. Each further statement would commit on its own,
    /// so use this only where one statement does all the work (a hot path such as a refresh
    /// rotation); anything else wants [`Database::begin_system`]. Run the statement to its end
    /// (`execute` or `fetch_all`): the commit happens there, and a statement stopped after
    /// its first row (`fetch_optional`, `fetch_one`) would not report a failed commit. On
    /// PostgreSQL it is an
    /// ordinary system transaction (the row-level-security settings are transaction-local).
    ///
    /// # Errors
    /// [`Error::Database`] when no connection can be had.
    pub async fn begin_system_statement(&self) -> Result<SystemTx> {
        Ok(SystemTx::new(
            self.begin_conn(Mode::Statement, Settings::System).await?,
            self.audit.clone(),
        ))
    }

    /// Begins a read-only transaction of the system itself (see [`SystemTx`]).
    ///
    /// # Errors
    /// [`Error::Database`] when no connection can be had.
    pub async fn begin_system_read(&self) -> Result<SystemTx> {
        Ok(SystemTx::new(
            self.begin_conn(Mode::ReadOnly, Settings::System).await?,
            self.audit.clone(),
        ))
    }

    /// Begins a transaction with the settings PostgreSQL's row-level security reads.
    /// `set_config(..., true)` is transaction-local: nothing leaks to the next user of the
    /// pooled connection.
    pub(crate) async fn begin_conn(&self, mode: Mode, settings: Settings<'_>) -> Result<Conn> {
        match &self.pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pools) => {
                let _ = settings; // SQLite has no row-level security; the app filter is the wall.
                use crate::sql::SqliteTx;
                let tx = match (mode, &pools.reader) {
                    // The one writer connection: writers queue for it, never for the lock.
                    (Mode::ReadWrite, _) => SqliteTx::Writer(pools.writer.begin().await?),
                    // Readers need no transaction: each statement reads one snapshot.
                    (Mode::ReadOnly, Some(reader)) => SqliteTx::Reader(reader.acquire().await?),
                    // One statement is its own transaction, still on the one writer (an
                    // in-memory database reads there too).
                    (Mode::Statement, _) | (Mode::ReadOnly, None) => {
                        SqliteTx::Writer(pools.writer.lock().await?)
                    }
                };
                Ok(Conn::Sqlite(tx))
            }
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => {
                // All three settings, every time: whatever a connection might carry over from
                // elsewhere, a transaction sees exactly what its kind allows. They travel with
                // `BEGIN` in one simple-protocol message: one round trip instead of two. The
                // values are ids this crate formatted (or "on"); quotes are doubled anyway.
                let (tenant, user, system) = match settings {
                    Settings::Tenant(tenant) => (tenant, "", ""),
                    Settings::User(user) => ("", user, ""),
                    Settings::System => ("", "", "on"),
                };
                let quote = |value: &str| value.replace('\'', "''");
                let begin = match mode {
                    Mode::ReadWrite | Mode::Statement => "BEGIN",
                    // Read committed whatever the server's default: a read's `COMMIT` is
                    // sent later (see `postgres::PgConnections`), which is only sound where a
                    // read-only transaction's commit cannot fail (it can under SERIALIZABLE).
                    Mode::ReadOnly => "BEGIN ISOLATION LEVEL READ COMMITTED, READ ONLY",
                };
                let statement = format!(
                    "{begin}; SELECT set_config('app.tenant_id', '{}', true), \
                     set_config('app.user_id', '{}', true), set_config('app.system', '{}', true)",
                    quote(tenant),
                    quote(user),
                    quote(system)
                );
                let tx = pool.begin(&statement, mode == Mode::ReadOnly).await?;
                Ok(Conn::Postgres(tx))
            }
        }
    }

    /// Closes every connection, waiting for checked-out ones to come back.
    pub async fn close(&self) {
        match &self.pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pools) => pools.close().await,
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => pool.close().await,
        }
    }
}
