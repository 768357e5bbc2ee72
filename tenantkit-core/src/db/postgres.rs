//! PostgreSQL connection settings and the row-level-security checks made at start-up.

use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions as _, Connection as _, Executor as _};
use tokio::sync::Notify;

use super::DatabaseOptions;
use super::slots::{Held, Slots};
use crate::{Error, Result};

/// A connection older than this is replaced before its next use.
const MAX_LIFETIME: Duration = Duration::from_secs(1800);
/// A connection unused this long is replaced before its next use: servers and proxies tend
/// to drop idle connections, and a dropped one would fail its next statement.
const MAX_IDLE: Duration = Duration::from_secs(300);
/// How long a finished read-only transaction may wait for its connection's next
/// transaction to carry its `COMMIT` before a task sends it on its own.
const COMMIT_AFTER: Duration = Duration::from_millis(20);
/// How long ending a transaction a request left open may take before its connection is
/// given up (closed; the server rolls it back).
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The PostgreSQL connections, each behind a mutex of its own (see [`super::slots`]),
/// opened on first use.
///
/// Round trips: sqlx's pool pings every connection it gets back (a round trip per request,
/// in a task it spawns). Here a connection that ended cleanly goes straight to the next
/// holder, and one that did not (an error, a cancelled request) is rolled back, or closed
/// when that fails. A read-only transaction answers as soon as its statements have: its
/// `COMMIT` (which has nothing to write) travels in the same message as the connection's
/// next `BEGIN`, or, when no transaction comes within [`COMMIT_AFTER`], a task sends it. So
/// a read is two round trips (`COMMIT; BEGIN; set_config`, the statement), where it was
/// four (`BEGIN; set_config`, the statement, `COMMIT`, the ping).
#[derive(Clone)]
pub(crate) struct PgConnections {
    inner: Arc<Inner>,
}

struct Inner {
    slots: Slots<Slot>,
    options: PgConnectOptions,
    acquire_timeout: Duration,
    /// Wakes the task that commits the finished reads no transaction came for.
    settle: Arc<Notify>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The settling task holds only a weak reference: this lets it see that and end.
        self.settle.notify_one();
    }
}

#[derive(Default)]
pub(crate) struct Slot {
    conn: Option<PgConnection>,
    opened: Option<Instant>,
    released: Option<Instant>,
    /// A finished read-only transaction is still open on the connection: its `COMMIT` is
    /// sent before anything else.
    owes_commit: bool,
    /// Held, and not yet given back clean: set by every holder, cleared only when the
    /// connection is known to be outside any transaction of that holder's (a release, a
    /// rollback, the settling `COMMIT`). Found set by the next holder (a cleanup task that
    /// never ran, say, because its runtime ended), the connection is closed, not reused.
    in_use: bool,
}

impl Slot {
    fn conn(&mut self) -> &mut PgConnection {
        self.conn
            .as_mut()
            .expect("a held slot has an open connection")
    }

    /// Ends the connection's transaction with `sql` (`COMMIT` or `ROLLBACK`), or closes the
    /// connection when that fails or takes longer than [`CLEANUP_TIMEOUT`]. Marked in use
    /// until done: were the caller dropped midway, the next holder closes the connection
    /// instead of using it.
    async fn end(&mut self, sql: &'static str) {
        self.in_use = true;
        if let Some(conn) = self.conn.as_mut() {
            let ended = tokio::time::timeout(CLEANUP_TIMEOUT, sqlx::query(sql).execute(conn)).await;
            let error = match ended {
                Ok(Ok(_)) => None,
                Ok(Err(err)) => Some(err.to_string()),
                Err(_) => Some("timed out".to_owned()),
            };
            if let Some(error) = error {
                tracing::warn!(%error, statement = sql, "closing a PostgreSQL connection that could not end its transaction");
                self.conn = None;
            }
        }
        self.owes_commit = false;
        self.released = Some(Instant::now());
        self.in_use = false;
    }
}

impl std::fmt::Debug for PgConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnections")
            .field("connections", &self.inner.slots.len())
            .finish_non_exhaustive()
    }
}

impl PgConnections {
    /// A connection inside a transaction begun by `begin` (a simple-protocol text:
    /// `BEGIN …; SELECT set_config(…)`), in one round trip with the `COMMIT` the connection
    /// may owe.
    pub(crate) async fn begin(
        &self,
        begin: &str,
        read_only: bool,
    ) -> std::result::Result<PgConn, sqlx::Error> {
        let mut conn = self.hold(read_only).await?;
        let slot = conn.slot();
        // Cleared first: from here a failure or a cancelled request rolls back whatever is
        // open (the guard is not done).
        let first = if std::mem::take(&mut slot.owes_commit) {
            slot.conn()
                .execute(format!("COMMIT; {begin}").as_str())
                .await
        } else {
            slot.conn().execute(begin).await
        };
        if let Err(err) = first {
            // Nothing of the caller's has run: a connection that failed (the server restarted,
            // a proxy dropped it; or the previous read's owed `COMMIT` failed, which is not
            // this caller's business) is replaced, once.
            self.reopen(&mut conn, &err).await?;
            conn.slot().conn().execute(begin).await?;
        }
        Ok(conn)
    }

    /// Replaces the connection of `conn` after `err`, a failure before its holder ran
    /// anything.
    async fn reopen(
        &self,
        conn: &mut PgConn,
        err: &sqlx::Error,
    ) -> std::result::Result<(), sqlx::Error> {
        tracing::warn!(error = %err, "replacing a PostgreSQL connection that failed before use");
        let slot = conn.slot();
        slot.conn = None;
        slot.owes_commit = false;
        self.open(slot).await
    }

    async fn open(&self, slot: &mut Slot) -> std::result::Result<(), sqlx::Error> {
        let opened = tokio::time::timeout(self.inner.acquire_timeout, self.inner.options.connect())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        slot.conn = Some(opened);
        slot.opened = Some(Instant::now());
        Ok(())
    }

    /// A connection outside any transaction, for the crate's own statements (migrations, the
    /// start-up checks, pings). [`PgConn::release`] it when done.
    pub(crate) async fn raw(&self) -> std::result::Result<PgConn, sqlx::Error> {
        let mut conn = self.hold(false).await?;
        let slot = conn.slot();
        if std::mem::take(&mut slot.owes_commit)
            && let Err(err) = slot.conn().execute("COMMIT").await
        {
            self.reopen(&mut conn, &err).await?;
        }
        Ok(conn)
    }

    /// A held slot with a usable connection: opened on first use, replaced when too old or
    /// idle too long.
    async fn hold(&self, read_only: bool) -> std::result::Result<PgConn, sqlx::Error> {
        let held = self.inner.slots.acquire().await?;
        // The guard first: cancelled from here on, it cleans up.
        let mut conn = PgConn {
            held: Some(held),
            read_only,
            done: false,
            settle: self.inner.settle.clone(),
        };
        let slot = conn.slot();
        let stale = slot.opened.is_some_and(|at| at.elapsed() > MAX_LIFETIME)
            || slot.released.is_some_and(|at| at.elapsed() > MAX_IDLE);
        if slot.in_use {
            // Its last holder never gave it back clean: what state it is in is unknown.
            tracing::warn!("closing a PostgreSQL connection whose last holder did not end cleanly");
            slot.conn = None;
        } else if stale && let Some(old) = slot.conn.take() {
            // The server rolls back whatever the connection still had open.
            let _ = tokio::time::timeout(CLEANUP_TIMEOUT, old.close()).await;
        }
        slot.in_use = true;
        if slot.conn.is_none() {
            slot.owes_commit = false;
            self.open(slot).await?;
        }
        Ok(conn)
    }

    /// A listener on a connection of its own (outside the slots: it waits for notifications
    /// as long as it lives), reconnecting after a lost connection (see
    /// [`crate::outbox::Listener`]).
    pub(crate) async fn listener(
        &self,
    ) -> std::result::Result<sqlx::postgres::PgListener, sqlx::Error> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(self.inner.acquire_timeout)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(self.inner.options.clone());
        let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
        // The pool is the listener's own: nobody closes it but the listener's drop.
        listener.ignore_pool_close_event(true);
        Ok(listener)
    }

    pub(crate) async fn close(&self) {
        self.inner
            .slots
            .close(async |slot: &mut Slot| {
                if let Some(conn) = slot.conn.take() {
                    let _ = tokio::time::timeout(CLEANUP_TIMEOUT, conn.close()).await;
                }
            })
            .await;
    }
}

/// Sends the `COMMIT` of finished reads whose connection no transaction came for within
/// [`COMMIT_AFTER`]: a read-only transaction holds no row locks, but its table locks would
/// keep a migration's `ALTER TABLE` waiting.
async fn settle_idle(inner: Weak<Inner>, settle: Arc<Notify>) {
    loop {
        settle.notified().await;
        tokio::time::sleep(COMMIT_AFTER).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        for index in 0..inner.slots.len() {
            // A slot in use settles itself: its holder's next `BEGIN` or release.
            let Some(mut held) = inner.slots.try_acquire_at(index) else {
                continue;
            };
            let slot = &mut *held.slot;
            if !slot.owes_commit {
                continue;
            }
            if slot.released.is_some_and(|at| at.elapsed() < COMMIT_AFTER) {
                // Released since this round began: the next round sees it.
                settle.notify_one();
                continue;
            }
            slot.end("COMMIT").await;
        }
    }
}

/// A PostgreSQL connection while one transaction holds it. Ended without
/// [`commit`](Self::commit) (an error, a cancelled request), its transaction is rolled back
/// by a task that keeps the connection until that is done, and the connection is closed
/// when the rollback fails: the next holder finds it clean, or opens a new one.
#[doc(hidden)]
pub struct PgConn {
    held: Option<Held<Slot>>,
    read_only: bool,
    done: bool,
    settle: Arc<Notify>,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConn")
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

impl PgConn {
    fn slot(&mut self) -> &mut Slot {
        &mut self
            .held
            .as_mut()
            .expect("a guard holds its slot until dropped")
            .slot
    }

    /// Commits the transaction. A read-only one owes its `COMMIT` to the connection's next
    /// use (or the settling task): nothing was written, so there is nothing to wait for.
    pub(crate) async fn commit(mut self) -> std::result::Result<(), sqlx::Error> {
        if self.read_only {
            self.slot().owes_commit = true;
            self.settle.notify_one();
        } else {
            self.slot().conn().execute("COMMIT").await?;
        }
        self.release();
        Ok(())
    }

    /// Gives the connection back, clean (outside any transaction but a read's owed commit).
    pub(crate) fn release(mut self) {
        let slot = self.slot();
        slot.released = Some(Instant::now());
        slot.in_use = false;
        self.done = true;
    }
}

impl std::ops::Deref for PgConn {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.held
            .as_ref()
            .and_then(|held| held.slot.conn.as_ref())
            .expect("a guard holds an open connection until dropped")
    }
}

impl std::ops::DerefMut for PgConn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.slot().conn()
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        let Some(mut held) = self.held.take() else {
            return;
        };
        if self.done {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            held.slot.conn = None;
            return;
        };
        // The task keeps the slot and its permit: nobody else gets the connection before it
        // is clean (after a cancelled statement sqlx first reads what is left of its answer).
        runtime.spawn(async move {
            let slot = &mut *held.slot;
            slot.end("ROLLBACK").await;
            drop(held);
        });
    }
}

pub(super) async fn connect(url: &str, options: &DatabaseOptions) -> Result<PgConnections> {
    let connect = PgConnectOptions::from_str(url)
        .map_err(|e| Error::Config(format!("invalid PostgreSQL URL: {e}")))?;
    let settle = Arc::new(Notify::new());
    let inner = Arc::new(Inner {
        slots: Slots::new(options.max_connections, options.acquire_timeout),
        options: connect,
        acquire_timeout: options.acquire_timeout,
        settle: settle.clone(),
    });
    tokio::spawn(settle_idle(Arc::downgrade(&inner), settle));
    let connections = PgConnections { inner };
    // One now, so that a database that cannot be reached fails at start-up.
    connections.raw().await?.release();
    Ok(connections)
}

/// Whether the connecting role owns tenantkit's registry of tenant tables (migration 1015) of
/// this schema (an owner could unregister tables); no row when there is no registry.
const REGISTRY_OWNED: &str = "SELECT pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE') \
     FROM pg_catalog.pg_class c \
     WHERE c.oid = to_regclass(quote_ident(current_schema()) || '.tenantkit_tenant_tables')";

/// Tenant relations are the registered tables (`tenantkit_tenant_tables`: those of tenantkit's
/// migration sets and those the application registers, see `migrate`) and the views over
/// them; other tables of the schema, even with a `tenant_id` column, are the application's
/// own. For each: its kind, whether RLS is enabled and forced, whether the connecting role
/// owns it, whether a policy compares `tenant_id` with the transaction's tenant, and (views)
/// whether it runs with the invoker's rights (so the tables' RLS applies to it).
const TENANT_RELATIONS: &str = "WITH registered AS ( \
         SELECT r.relid::oid AS oid FROM tenantkit_tenant_tables r), \
     relations AS ( \
         SELECT oid FROM registered \
         UNION SELECT rw.ev_class FROM pg_catalog.pg_rewrite rw \
         JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass \
              AND d.objid = rw.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass \
         WHERE d.refobjid IN (SELECT oid FROM registered) AND rw.ev_class <> d.refobjid) \
     SELECT c.relname::text AS name, c.relkind::text AS kind, \
            c.relrowsecurity AS enabled, c.relforcerowsecurity AS forced, \
            pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE') AS owned, \
            EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid \
                    AND pg_catalog.pg_get_expr(p.polqual, p.polrelid) \
                        LIKE '%tenantkit_current_tenant()%') AS tenant_policy, \
            coalesce('security_invoker=true' = ANY (c.reloptions), false) AS security_invoker \
     FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm') \
       AND c.oid IN (SELECT oid FROM relations) \
     ORDER BY c.relname";

/// Permissive policies on registered tables that let everything through (`USING (true)`) and
/// apply to the connecting role (to `PUBLIC`, or to a role it is a member of): such a policy
/// would open its table.
const OPEN_POLICIES: &str = "SELECT c.relname::text || '.' || p.polname::text \
     FROM pg_catalog.pg_policy p \
     JOIN pg_catalog.pg_class c ON c.oid = p.polrelid \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = current_schema() AND p.polpermissive \
       AND c.oid IN (SELECT r.relid::oid FROM tenantkit_tenant_tables r) \
       AND pg_catalog.pg_get_expr(p.polqual, p.polrelid) = 'true' \
       AND EXISTS (SELECT 1 FROM unnest(p.polroles) r \
                   WHERE r = 0 OR pg_catalog.pg_has_role(current_user, r, 'USAGE')) \
     ORDER BY 1";

/// How to apply tenantkit's migrations, for the errors that find them missing.
const APPLY_MIGRATIONS: &str = "apply tenantkit's migrations to this schema first, as the \
     tables' owner (`Database::connect_with(owner_url, &DatabaseOptions::for_migrations())` \
     then `Database::migrate`), or check the role's search_path";

/// Refuses to serve when row-level security would not be a wall: the role is a superuser or
/// has `BYPASSRLS` (both skip policies), owns a registered tenant table (an owner could turn
/// RLS off), a registered tenant table has RLS not enabled or not forced or no tenant policy
/// (its rows would be open to every tenant, or to none), a view over one runs with its owner's
/// rights, a policy that lets everything through applies to the role on one, or there are no
/// registered tenant tables at all (the migrations were not applied to this schema). Tables
/// nobody registered (an existing application's own) are not looked at.
pub(super) async fn check_rls_safe(connections: &PgConnections) -> Result<()> {
    let mut conn = connections.raw().await?;
    check_rls_safe_on(&mut conn).await?;
    conn.release();
    Ok(())
}

async fn check_rls_safe_on(conn: &mut PgConnection) -> Result<()> {
    let (role, superuser, bypass): (String, bool, bool) = sqlx::query_as(
        "SELECT r.rolname::text, r.rolsuper, r.rolbypassrls \
         FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
    )
    .fetch_one(&mut *conn)
    .await?;
    let unsafe_role = |why: &str| {
        Err(Error::Config(format!(
            "the PostgreSQL role `{role}` {why}, so row-level security would not protect \
             tenants; connect the application as a role that is a member of `tenantkit_app` \
             only, and run migrations with a separate owner role (see README)"
        )))
    };
    if superuser {
        return unsafe_role("is a superuser");
    }
    if bypass {
        return unsafe_role("has BYPASSRLS");
    }
    let registry_owned: Option<bool> = sqlx::query_scalar(REGISTRY_OWNED)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(registry_owned) = registry_owned else {
        return Err(Error::Config(format!(
            "no registry of tenant tables (tenantkit_tenant_tables) in the current schema: \
             {APPLY_MIGRATIONS}"
        )));
    };
    let relations: Vec<TenantRelation> = sqlx::query_as(TENANT_RELATIONS)
        .fetch_all(&mut *conn)
        .await?;
    let mut owned: Vec<&str> = relations
        .iter()
        .filter(|r| r.owned)
        .map(|r| r.name.as_str())
        .collect();
    if registry_owned {
        owned.push("tenantkit_tenant_tables");
    }
    if !owned.is_empty() {
        return unsafe_role(&format!(
            "owns (or is a member of the owner of) the tenant tables {}",
            owned.join(", ")
        ));
    }
    let refuse = |what: &str, names: &[&str], fix: &str| {
        Err(Error::Config(format!(
            "{what}: {}; {fix}",
            names.join(", ")
        )))
    };
    if relations.iter().all(|r| r.kind == "v" || r.kind == "m") {
        return Err(Error::Config(format!(
            "no registered tenant tables in the current schema: {APPLY_MIGRATIONS}"
        )));
    }
    let tables = || relations.iter().filter(|r| r.kind == "r" || r.kind == "p");
    let unprotected: Vec<&str> = tables()
        .filter(|r| !(r.enabled && r.forced))
        .map(|r| r.name.as_str())
        .collect();
    if !unprotected.is_empty() {
        return refuse(
            "registered tenant tables without row-level security (ENABLE and FORCE)",
            &unprotected,
            "put each behind the tenant policy in its migration, applied with \
             `Database::migrate`: SELECT tenantkit_enable_tenant_rls('<table>');",
        );
    }
    let unpoliced: Vec<&str> = tables()
        .filter(|r| !r.tenant_policy)
        .map(|r| r.name.as_str())
        .collect();
    if !unpoliced.is_empty() {
        return refuse(
            "registered tenant tables without a tenant policy \
             (tenant_id = tenantkit_current_tenant())",
            &unpoliced,
            "add it in the table's migration, applied with `Database::migrate`: \
             SELECT tenantkit_enable_tenant_rls('<table>');",
        );
    }
    let definer_views: Vec<&str> = relations
        .iter()
        .filter(|r| r.kind == "m" || (r.kind == "v" && !r.security_invoker))
        .map(|r| r.name.as_str())
        .collect();
    if !definer_views.is_empty() {
        return refuse(
            "views over tenant rows that bypass row-level security",
            &definer_views,
            "a view must be created WITH (security_invoker = true); materialized views cannot \
             be protected",
        );
    }
    let open: Vec<String> = sqlx::query_scalar(OPEN_POLICIES)
        .fetch_all(&mut *conn)
        .await?;
    if !open.is_empty() {
        let names: Vec<&str> = open.iter().map(String::as_str).collect();
        return refuse(
            &format!("policies that let every row through apply to the role `{role}`"),
            &names,
            "such a policy may only name a role the application role is not a member of",
        );
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct TenantRelation {
    name: String,
    kind: String,
    enabled: bool,
    forced: bool,
    owned: bool,
    tenant_policy: bool,
    security_invoker: bool,
}
