//! The tenant and the user transaction kinds.

use std::fmt;

use super::{Conn, RawConn, Transaction, TxCore, raw, sealed};
use crate::{Result, TenantId, TenantScope, UserId};

/// A database transaction scoped to one tenant: the only way to reach a tenant's rows.
///
/// Every repository function on a tenant-owned table takes a `TenantTx` and filters by its
/// tenant; on PostgreSQL, row-level security enforces the same filter a second time. Dropping
/// it without [`TenantTx::commit`] rolls back.
pub struct TenantTx {
    scope: TenantScope,
    core: TxCore,
}

transaction_kind!(TenantTx);

impl fmt::Debug for TenantTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantTx")
            .field("tenant_id", &self.scope.tenant_id())
            .finish_non_exhaustive()
    }
}

impl TenantTx {
    pub(crate) fn new(scope: TenantScope, conn: Conn, audit: crate::audit::AuditSetup) -> Self {
        Self {
            scope,
            core: TxCore::new(conn, audit),
        }
    }

    /// The tenant every query of this transaction is limited to.
    pub fn tenant_id(&self) -> TenantId {
        self.scope.tenant_id()
    }

    /// The scope this transaction was opened with.
    pub fn scope(&self) -> &TenantScope {
        &self.scope
    }

    /// Whether this transaction sees team-restricted rows of teams its user is not in (see
    /// [`TenantScope::sees_all_teams`]).
    pub fn sees_all_teams(&self) -> bool {
        self.scope.sees_all_teams()
    }

    /// The user whose view this transaction has, unless it sees everything.
    pub fn viewer(&self) -> Option<UserId> {
        self.scope.viewer()
    }
}

/// A transaction that sees one user's rows across tenants (their memberships), but no
/// tenant's content.
pub struct UserTx {
    user: UserId,
    core: TxCore,
}

transaction_kind!(UserTx);

impl fmt::Debug for UserTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserTx")
            .field("user_id", &self.user)
            .finish_non_exhaustive()
    }
}

impl UserTx {
    pub(crate) fn new(user: UserId, conn: Conn) -> Self {
        Self {
            user,
            core: TxCore::new(conn, crate::audit::AuditSetup::default()),
        }
    }

    /// The user this transaction acts for.
    pub fn user_id(&self) -> UserId {
        self.user
    }
}
