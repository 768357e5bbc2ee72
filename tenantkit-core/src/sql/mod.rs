//! Transactions, and one SQL text for both backends.
//!
//! Every database access of tenantkit (and of crates built on it) runs inside one of three
//! transaction kinds, each opened from a [`crate::Database`]:
//!
//! | kind | opened with | sees on PostgreSQL |
//! | --- | --- | --- |
//! | [`TenantTx`] | [`Database::begin`](crate::Database::begin) / `begin_read` | one tenant's rows (`app.tenant_id`) |
//! | [`UserTx`] | [`Database::begin_user`](crate::Database::begin_user) / `begin_user_read` | one user's rows across tenants (`app.user_id`), e.g. their memberships |
//! | [`SystemTx`] | [`Database::begin_system`](crate::Database::begin_system) / `begin_system_read` | global tables, and tenant tables that opt into system access (`app.system`) |
//!
//! Inside any of them, [`with_conn!`](crate::with_conn) runs a body of sqlx code against the
//! transaction's connection. The body is written once and compiled for every backend this
//! build of tenantkit-core enables, so one SQL text (with `$1`-style placeholders, which both
//! SQLite and PostgreSQL accept) serves both. A statement that fails poisons the transaction:
//! its `commit` then refuses with [`crate::Error::Aborted`] on both backends, instead of
//! PostgreSQL silently rolling back and SQLite silently committing the half that worked.
//!
//! ```
//! use tenantkit_core::{with_conn, Database, Migrations, NewTenant, Result, TenantScope};
//!
//! # async fn demo(db: &Database) -> Result<()> {
//! let (tenant, tx) = db.create_tenant(NewTenant { name: "Acme".into(), slug: None }).await?;
//! tx.commit().await?;
//!
//! let mut tx = db.begin_read(&TenantScope::for_system(tenant.id)).await?;
//! let id = tx.tenant_id();
//! let members: i64 = with_conn!(&mut tx, |conn| {
//!     sqlx::query_scalar("SELECT count(*) FROM memberships WHERE tenant_id = $1")
//!         .bind(id)
//!         .fetch_one(conn)
//!         .await
//! })?;
//! tx.commit().await?;
//! assert_eq!(members, 0);
//! # Ok(())
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<()> {
//! # let db = Database::connect("sqlite::memory:").await?;
//! # db.migrate(&Migrations::new()).await?;
//! # demo(&db).await
//! # }
//! ```

use std::fmt;

use crate::Result;

/// The type of a backend that this build does not enable: no value of it exists, so code for
/// that backend is never reached (and never compiled against a missing driver).
#[doc(hidden)]
#[derive(Debug)]
pub enum Never {}

/// A SQLite connection as a transaction kind uses it: the one writer (inside `BEGIN
/// IMMEDIATE` … `COMMIT` for every read-write transaction, or in autocommit mode for a
/// single statement, see `Database::begin_system_statement`), or a reader in autocommit mode
/// (read-only transactions, where each statement reads one consistent snapshot, as
/// PostgreSQL's default READ COMMITTED gives each statement; skipping `BEGIN` and `COMMIT`
/// saves two round trips to the connection's thread per request).
#[cfg(feature = "sqlite")]
#[doc(hidden)]
#[derive(Debug)]
pub enum SqliteTx {
    /// The writer connection, held by this transaction.
    Writer(crate::db::WriterGuard),
    /// A read-only connection in autocommit mode.
    Reader(crate::db::ReaderGuard),
}

#[cfg(feature = "sqlite")]
impl std::ops::Deref for SqliteTx {
    type Target = sqlx::SqliteConnection;

    fn deref(&self) -> &sqlx::SqliteConnection {
        match self {
            SqliteTx::Writer(conn) => conn,
            SqliteTx::Reader(conn) => conn,
        }
    }
}

#[cfg(feature = "sqlite")]
impl std::ops::DerefMut for SqliteTx {
    fn deref_mut(&mut self) -> &mut sqlx::SqliteConnection {
        match self {
            SqliteTx::Writer(conn) => conn,
            SqliteTx::Reader(conn) => conn,
        }
    }
}

#[cfg(feature = "sqlite")]
impl SqliteTx {
    async fn commit(self) -> std::result::Result<(), sqlx::Error> {
        match self {
            SqliteTx::Writer(conn) => conn.commit().await,
            SqliteTx::Reader(_) => Ok(()),
        }
    }
}
#[cfg(not(feature = "sqlite"))]
#[doc(hidden)]
pub type SqliteTx = Never;

#[cfg(feature = "postgres")]
#[doc(hidden)]
pub type PgTx = crate::db::PgConn;
#[cfg(not(feature = "postgres"))]
#[doc(hidden)]
pub type PgTx = Never;

/// One open transaction on one backend. Both variants always exist; the one of a disabled
/// backend holds [`Never`].
#[doc(hidden)]
pub enum Conn {
    /// A SQLite transaction.
    Sqlite(SqliteTx),
    /// A PostgreSQL transaction.
    Postgres(PgTx),
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Conn::Sqlite(_) => "Conn::Sqlite",
            Conn::Postgres(_) => "Conn::Postgres",
        })
    }
}

/// Work registered with `after_commit`, run once the transaction's `COMMIT` succeeded.
type Hook = Box<dyn FnOnce() + Send + 'static>;

/// The state every transaction kind shares: the connection and whether a statement failed.
#[doc(hidden)]
pub struct TxCore {
    /// The open transaction.
    pub conn: Conn,
    /// Set when a statement run through [`with_conn!`](crate::with_conn) failed.
    pub poisoned: bool,
    /// How audit entries written in this transaction are anchored and chained.
    pub(crate) audit: crate::audit::AuditSetup,
    /// Run in order after a successful commit, dropped unrun otherwise. (Behind a mutex only
    /// so that the transaction stays `Sync`; it is reached through `&mut` alone, unlocked.)
    after_commit: std::sync::Mutex<Vec<Hook>>,
    /// The outbox topics this transaction already announces after its commit (SQLite's
    /// in-process notifications, one per topic as PostgreSQL's `NOTIFY` folds them).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) announced_topics: Vec<String>,
}

impl fmt::Debug for TxCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxCore")
            .field("conn", &self.conn)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl TxCore {
    pub(crate) fn new(conn: Conn, audit: crate::audit::AuditSetup) -> Self {
        Self {
            conn,
            poisoned: false,
            audit,
            after_commit: std::sync::Mutex::default(),
            announced_topics: Vec::new(),
        }
    }

    /// The backend of this transaction.
    pub(crate) fn backend(&self) -> crate::Backend {
        match self.conn {
            Conn::Sqlite(_) => crate::Backend::Sqlite,
            Conn::Postgres(_) => crate::Backend::Postgres,
        }
    }

    pub(crate) fn after_commit(&mut self, hook: Hook) {
        self.hooks().push(hook);
    }

    fn hooks(&mut self) -> &mut Vec<Hook> {
        // Never poisoned: hooks run after it is taken apart (see `run_hooks`).
        self.after_commit
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn commit(mut self) -> Result<()> {
        let hooks = std::mem::take(self.hooks());
        self.commit_conn().await?;
        run_hooks(hooks);
        Ok(())
    }

    /// Commits the connection's transaction; hooks are the caller's.
    async fn commit_conn(self) -> Result<()> {
        if self.poisoned {
            // Dropping the connection's transaction rolls it back.
            return Err(crate::Error::Aborted);
        }
        match self.conn {
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(tx) => tx.commit().await?,
            #[cfg(not(feature = "sqlite"))]
            Conn::Sqlite(never) => match never {},
            #[cfg(feature = "postgres")]
            Conn::Postgres(tx) => tx.commit().await?,
            #[cfg(not(feature = "postgres"))]
            Conn::Postgres(never) => match never {},
        }
        Ok(())
    }
}

/// Runs `after_commit` hooks in registration order. A hook that panics is logged and the
/// rest still run: the transaction is committed whatever a hook does.
fn run_hooks(hooks: Vec<Hook>) {
    for hook in hooks {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(hook)).is_err() {
            tracing::error!("an after_commit hook panicked (the transaction is committed)");
        }
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A transaction of one of tenantkit's three kinds ([`TenantTx`], [`UserTx`], [`SystemTx`]):
/// what [`with_conn!`](crate::with_conn) accepts. Sealed: transactions are only made by
/// [`crate::Database`], which sets what each kind may see.
pub trait Transaction: sealed::Sealed + Send {
    #[doc(hidden)]
    fn core(&mut self) -> &mut TxCore;
}

/// The shared state of a transaction, for [`with_conn!`](crate::with_conn).
#[doc(hidden)]
pub fn core_of<T: Transaction + ?Sized>(tx: &mut T) -> &mut TxCore {
    tx.core()
}

/// Runs a body of sqlx code with `conn` bound to the `&mut` connection of a transaction
/// (anything implementing [`Transaction`], passed as `&mut`), once per enabled backend, and
/// poisons the transaction when the body returns an error.
///
/// The body must evaluate to a `Result` (usually `sqlx::Result<T>`) of the same type on every
/// backend: map backend-specific values to what you need (`.map(|done| done.rows_affected())`,
/// `.map(drop)`). `?` inside it ends the body with that error. It cannot use the transaction itself (it is borrowed), so read what
/// you need from it (such as [`TenantTx::tenant_id`]) first.
///
/// See the [module documentation](crate::sql) for an example.
#[macro_export]
macro_rules! with_conn {
    ($tx:expr, |$c:ident| $body:expr) => {{
        let core = $crate::__private::core_of($tx);
        let result = match &mut core.conn {
            $crate::__private::Conn::Sqlite(tx) => $crate::__tk_sqlite_arm!(tx, $c, $body),
            $crate::__private::Conn::Postgres(tx) => $crate::__tk_postgres_arm!(tx, $c, $body),
        };
        if result.is_err() {
            core.poisoned = true;
        }
        result
    }};
}

#[cfg(feature = "sqlite")]
#[doc(hidden)]
#[macro_export]
macro_rules! __tk_sqlite_arm {
    ($tx:ident, $c:ident, $body:expr) => {{
        let $c: &mut $crate::__private::sqlx::SqliteConnection = &mut **$tx;
        // An async block, so that `?` inside the body ends the body (and poisons the
        // transaction), not the caller's function.
        async { $body }.await
    }};
}

#[cfg(not(feature = "sqlite"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __tk_sqlite_arm {
    ($tx:ident, $c:ident, $body:expr) => {
        match *$tx {}
    };
}

#[cfg(feature = "postgres")]
#[doc(hidden)]
#[macro_export]
macro_rules! __tk_postgres_arm {
    ($tx:ident, $c:ident, $body:expr) => {{
        let $c: &mut $crate::__private::sqlx::PgConnection = &mut **$tx;
        async { $body }.await
    }};
}

#[cfg(not(feature = "postgres"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __tk_postgres_arm {
    ($tx:ident, $c:ident, $body:expr) => {
        match *$tx {}
    };
}

/// Direct access to the connection of a transaction, for statements that only one backend
/// understands (catalog queries, PostgreSQL-only features). Prefer
/// [`with_conn!`](crate::with_conn): it runs one text on both backends and poisons the
/// transaction on failure, which statements run through `RawConn` do not.
///
/// The connection is already inside the transaction: do not begin, commit or roll back
/// through it (sqlx's `Connection::begin` on it would send a second `BEGIN`, not a
/// savepoint, and its end would end tenantkit's transaction and its row-level-security
/// settings with it); use `SAVEPOINT` statements for a nested unit.
#[derive(Debug)]
#[non_exhaustive]
pub enum RawConn<'a> {
    /// A SQLite connection inside the transaction.
    #[cfg(feature = "sqlite")]
    Sqlite(&'a mut sqlx::SqliteConnection),
    /// A PostgreSQL connection inside the transaction.
    #[cfg(feature = "postgres")]
    Postgres(&'a mut sqlx::PgConnection),
}

/// The connection of any transaction kind, for backend-specific statements inside this crate.
#[cfg(feature = "postgres")]
pub(crate) fn raw_of<T: Transaction + ?Sized>(tx: &mut T) -> RawConn<'_> {
    raw(tx.core())
}

fn raw(core: &mut TxCore) -> RawConn<'_> {
    match &mut core.conn {
        #[cfg(feature = "sqlite")]
        Conn::Sqlite(tx) => RawConn::Sqlite(tx),
        #[cfg(not(feature = "sqlite"))]
        Conn::Sqlite(never) => match *never {},
        #[cfg(feature = "postgres")]
        Conn::Postgres(tx) => RawConn::Postgres(tx),
        #[cfg(not(feature = "postgres"))]
        Conn::Postgres(never) => match *never {},
    }
}

macro_rules! transaction_kind {
    ($name:ident) => {
        impl sealed::Sealed for $name {}

        impl Transaction for $name {
            fn core(&mut self) -> &mut TxCore {
                &mut self.core
            }
        }

        impl $name {
            /// Commits the transaction.
            ///
            /// # Errors
            /// [`crate::Error::Aborted`] when a statement of this transaction failed (it is
            /// rolled back: a transaction is all or nothing); [`crate::Error::Database`] when
            /// the commit itself fails. Nothing was written in either case.
            pub async fn commit(self) -> Result<()> {
                self.core.commit().await
            }

            /// Registers `hook` to run once this transaction has committed: exactly once,
            /// right after its `COMMIT` succeeded and before [`commit`](Self::commit)
            /// returns, in the order hooks were registered. It never runs when the
            /// transaction rolls back, is dropped uncommitted, was poisoned by a failed
            /// statement, or when the `COMMIT` itself fails (SQLite's writer may begin the
            /// next transaction in the same round trip as this one's `COMMIT`: only the
            /// `COMMIT`'s own result counts). A read-only transaction has nothing to lose, so
            /// its hooks run when its `commit` returns (PostgreSQL sends a read's `COMMIT`
            /// later; it cannot undo anything).
            ///
            /// Hooks run on the committing task and must be quick and never block: for
            /// async work, spawn a task in the hook (`tokio::spawn`). A panicking hook is
            /// logged and the others still run; `commit` still returns `Ok`, because the
            /// data is committed. A hook is in-process and lost if the process dies after
            /// the `COMMIT`: for work that must not be lost, write an outbox message in the
            /// transaction instead (see [`crate::outbox`]).
            pub fn after_commit(&mut self, hook: impl FnOnce() + Send + 'static) {
                self.core.after_commit(Box::new(hook));
            }

            /// The connection, for backend-specific statements. See [`RawConn`].
            pub fn raw(&mut self) -> RawConn<'_> {
                raw(&mut self.core)
            }

            #[allow(dead_code)] // A user transaction writes no audit entries.
            pub(crate) fn audit_setup(&self) -> crate::audit::AuditSetup {
                self.core.audit.clone()
            }
        }
    };
}

mod kinds;
mod system;

pub use kinds::{TenantTx, UserTx};
pub use system::{InTenant, SystemTx};

/// A row type that decodes on every backend this build enables (what
/// [`with_conn!`](crate::with_conn) bodies need of `query_as` rows). Derive `sqlx::FromRow`
/// and it holds.
pub trait Row: SqliteRow + PgRow + Send + Unpin {}
impl<T: SqliteRow + PgRow + Send + Unpin> Row for T {}

#[cfg(feature = "sqlite")]
#[doc(hidden)]
pub trait SqliteRow: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> {}
#[cfg(feature = "sqlite")]
impl<T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>> SqliteRow for T {}
#[cfg(not(feature = "sqlite"))]
#[doc(hidden)]
pub trait SqliteRow {}
#[cfg(not(feature = "sqlite"))]
impl<T> SqliteRow for T {}

#[cfg(feature = "postgres")]
#[doc(hidden)]
pub trait PgRow: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> {}
#[cfg(feature = "postgres")]
impl<T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>> PgRow for T {}
#[cfg(not(feature = "postgres"))]
#[doc(hidden)]
pub trait PgRow {}
#[cfg(not(feature = "postgres"))]
impl<T> PgRow for T {}
