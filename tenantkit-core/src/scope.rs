//! Tenant scopes and tenant-scoped transactions: the only way to reach tenant-owned rows.

use std::fmt;

use crate::{Permission, Principal, Result, TenantId, UserId};

/// How far inside its tenant a scope reaches: restricted projects are visible only to their
/// team's members and to callers allowed [`Permission::AccessRestrictedProjects`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Every row of the tenant (admins, owners, the system).
    Everything,
    /// Unrestricted rows, and restricted projects of this user's teams.
    User(UserId),
}

/// The tenant a piece of work runs in, taken from a verified [`Principal`], and whose view of
/// it (restricted projects are hidden from callers outside their team).
///
/// There is deliberately no way to build one from request input: the tenant never comes
/// from a path or a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantScope {
    tenant_id: TenantId,
    reach: Reach,
}

impl TenantScope {
    /// The scope of the caller's tenant, as the caller may see it.
    pub fn of(principal: &Principal) -> Self {
        let reach = if principal.can(Permission::AccessRestrictedProjects) {
            Reach::Everything
        } else {
            Reach::User(principal.user_id())
        };
        Self {
            tenant_id: principal.tenant_id(),
            reach,
        }
    }

    /// A scope for work the system does on its own behalf (a billing webhook, a CLI command,
    /// a background job), where no principal exists. It sees every row of the tenant.
    ///
    /// The `tenant_id` must come from a trusted source (a verified signature, the operator,
    /// a stored record), never from a client request.
    pub fn for_system(tenant_id: TenantId) -> Self {
        Self {
            tenant_id,
            reach: Reach::Everything,
        }
    }

    /// The tenant.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    /// Whether this scope sees restricted projects of teams its user is not in.
    pub fn sees_all_projects(&self) -> bool {
        self.reach == Reach::Everything
    }
}

impl From<&Principal> for TenantScope {
    fn from(principal: &Principal) -> Self {
        TenantScope::of(principal)
    }
}

/// One open transaction on one backend.
pub(crate) enum Conn {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// Runs `$body` with `$c` bound to the backend's `&mut Connection`. The body is written once
/// and type-checked per backend, so one SQL text (with `$n` placeholders, which both accept)
/// serves SQLite and PostgreSQL.
macro_rules! with_conn {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            #[cfg(feature = "sqlite")]
            $crate::scope::Conn::Sqlite(tx) => {
                let $c = &mut **tx;
                $body
            }
            #[cfg(feature = "postgres")]
            $crate::scope::Conn::Postgres(tx) => {
                let $c = &mut **tx;
                $body
            }
        }
    };
}
pub(crate) use with_conn;

/// Like [`with_conn!`] on a [`TenantTx`], but a failed statement poisons the transaction, so
/// that [`TenantTx::commit`] fails instead of silently committing half of the work (SQLite)
/// or silently rolling back (PostgreSQL answers `COMMIT` of an aborted transaction with
/// `ROLLBACK`). Both backends thus behave alike.
macro_rules! scoped {
    ($tx:expr, |$c:ident| $body:expr) => {{
        let tx: &mut $crate::TenantTx = $tx;
        let result = $crate::scope::with_conn!(&mut tx.conn, |$c| $body);
        if result.is_err() {
            tx.poisoned = true;
        }
        result
    }};
}
pub(crate) use scoped;

impl Conn {
    pub(crate) async fn commit(self) -> Result<()> {
        match self {
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(tx) => tx.commit().await?,
            #[cfg(feature = "postgres")]
            Conn::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

/// A database transaction scoped to one tenant.
///
/// Every repository method on a tenant-owned table takes a `TenantTx` and filters by its
/// tenant; on PostgreSQL, row-level security enforces the same filter a second time. Dropping
/// it without [`TenantTx::commit`] rolls back.
pub struct TenantTx {
    tenant_id: TenantId,
    reach: Reach,
    pub(crate) conn: Conn,
    pub(crate) poisoned: bool,
}

impl fmt::Debug for TenantTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantTx")
            .field("tenant_id", &self.tenant_id)
            .finish_non_exhaustive()
    }
}

/// Direct access to the connection of a [`TenantTx`], for queries of your own.
///
/// Every query you run through it must filter by [`TenantTx::tenant_id`]. On PostgreSQL,
/// row-level security hides other tenants' rows even if you forget; on SQLite nothing does.
#[derive(Debug)]
#[non_exhaustive]
pub enum RawConn<'a> {
    /// A SQLite connection inside the transaction.
    #[cfg(feature = "sqlite")]
    Sqlite(&'a mut sqlx::SqliteConnection),
    /// A PostgreSQL connection inside the transaction, with the tenant set for RLS.
    #[cfg(feature = "postgres")]
    Postgres(&'a mut sqlx::PgConnection),
}

impl TenantTx {
    pub(crate) fn new(scope: TenantScope, conn: Conn) -> Self {
        Self {
            tenant_id: scope.tenant_id,
            reach: scope.reach,
            conn,
            poisoned: false,
        }
    }

    /// The tenant every query of this transaction is limited to.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    /// Whether this transaction sees restricted projects of teams its user is not in (see
    /// [`TenantScope::sees_all_projects`]).
    pub fn sees_all_projects(&self) -> bool {
        self.reach == Reach::Everything
    }

    /// The user whose view this transaction has, unless it sees everything.
    pub(crate) fn viewer(&self) -> Option<UserId> {
        match self.reach {
            Reach::Everything => None,
            Reach::User(user) => Some(user),
        }
    }

    /// The connection, for queries tenantkit does not provide. See [`RawConn`].
    ///
    /// Statements run through it do not poison the transaction: on PostgreSQL a failed one
    /// still aborts it, so handle errors there yourself.
    pub fn raw(&mut self) -> RawConn<'_> {
        match &mut self.conn {
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(tx) => RawConn::Sqlite(tx),
            #[cfg(feature = "postgres")]
            Conn::Postgres(tx) => RawConn::Postgres(tx),
        }
    }

    /// Commits the transaction.
    ///
    /// # Errors
    /// [`crate::Error::Aborted`] when a statement of this transaction failed (it is rolled
    /// back: a transaction is all or nothing); [`crate::Error::Database`] when the commit
    /// itself fails. Nothing was written in either case.
    pub async fn commit(self) -> Result<()> {
        if self.poisoned {
            // Dropping the connection's transaction rolls it back.
            return Err(crate::Error::Aborted);
        }
        self.conn.commit().await
    }
}
