//! The system transaction kind, and acting in one tenant inside it ([`SystemTx::in_tenant`]).

use std::fmt;

use super::{Conn, RawConn, Transaction, TxCore, raw, sealed};
use crate::{Result, TenantId};

/// A transaction of the system itself, with no tenant: it reaches global tables (tenants,
/// users, a webhook inbox keyed by event id) and, on PostgreSQL, the tenant tables whose
/// migration opted into system access (`tenantkit_allow_system_access`). Every other tenant
/// table reads as empty.
///
/// Open one only for work that must find a row before its tenant is known (a refresh token
/// by its hash, an event by its id), and move to a [`TenantTx`](super::TenantTx) once it is, or, to write
/// that tenant's rows in this same transaction, act in it with [`SystemTx::in_tenant`].
pub struct SystemTx {
    core: TxCore,
}

transaction_kind!(SystemTx);

impl fmt::Debug for SystemTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemTx").finish_non_exhaustive()
    }
}

impl SystemTx {
    pub(crate) fn new(conn: Conn, audit: crate::audit::AuditSetup) -> Self {
        Self {
            core: TxCore::new(conn, audit),
        }
    }

    /// Sets `tenant`'s plan (its billing decides which; this transaction's caller audits it).
    /// `false` when there is no such tenant.
    ///
    /// # Errors
    /// [`crate::Error::Database`] on failure.
    pub async fn set_tenant_plan(
        &mut self,
        tenant: TenantId,
        plan: &crate::PlanName,
    ) -> Result<bool> {
        // The tenants table lets a transaction change only its own tenant's row: act in that
        // tenant for this statement.
        self.enter_tenant(Some(tenant)).await?;
        let updated = crate::with_conn!(self, |c| {
            sqlx::query("UPDATE tenants SET plan = $1 WHERE id = $2")
                .bind(plan)
                .bind(tenant)
                .execute(c)
                .await
                .map(|done| done.rows_affected())
        });
        self.enter_tenant(None).await?;
        Ok(updated? > 0)
    }

    /// On PostgreSQL, lets the next statements reach `tenant`'s rows (or, with `None`, no
    /// tenant's again): for the system's own work inside one tenant, such as its audit entry.
    pub(crate) async fn enter_tenant(&mut self, tenant: Option<TenantId>) -> Result<()> {
        self.set_rls(tenant, true).await
    }

    /// On PostgreSQL, sets the settings row-level security reads: `app.tenant_id` (empty for
    /// none) and `app.system` (`on` or empty). Poisons the transaction when it fails.
    async fn set_rls(&mut self, tenant: Option<TenantId>, system: bool) -> Result<()> {
        #[cfg(feature = "postgres")]
        {
            let setting = tenant.map(|t| t.to_string()).unwrap_or_default();
            #[allow(irrefutable_let_patterns)] // Irrefutable when PostgreSQL is the only backend.
            if let RawConn::Postgres(conn) = self.raw() {
                let entered = sqlx::query(
                    "SELECT set_config('app.tenant_id', $1, true), \
                     set_config('app.system', $2, true)",
                )
                .bind(setting)
                .bind(if system { "on" } else { "" })
                .execute(conn)
                .await;
                if entered.is_err() {
                    self.core.poisoned = true;
                }
                entered?;
            }
        }
        #[cfg(not(feature = "postgres"))]
        let _ = (tenant, system);
        Ok(())
    }

    /// Acts in `tenant` inside this system transaction, for work that learns its tenant from
    /// a system record and must then write that tenant's rows in the same transaction (a
    /// webhook handler writing the tenant's own table, committed with the event's mark).
    ///
    /// The returned [`InTenant`] is a transaction like a [`TenantTx`](super::TenantTx) of `tenant`: run
    /// statements through it with [`with_conn!`](crate::with_conn) and filter by
    /// [`InTenant::tenant_id`]. On PostgreSQL it sees exactly what a [`TenantTx`](super::TenantTx) of `tenant`
    /// sees: row-level security admits `tenant`'s rows of every tenant table and no other
    /// tenant's (the system's own access, `app.system`, is off meanwhile, so even the tables
    /// that opt into system access show only `tenant`'s rows). On SQLite, which has no
    /// row-level security, nothing is enforced by the database, exactly as for a
    /// [`TenantTx`](super::TenantTx): every statement must filter by [`InTenant::tenant_id`] itself.
    ///
    /// End it with [`InTenant::leave`], which returns this transaction to no tenant. A handle
    /// dropped without `leave` (an early return, a `?`) poisons this transaction on both
    /// backends: its [`commit`](Self::commit) then refuses with [`crate::Error::Aborted`] and
    /// nothing is written, so the system transaction can never carry on, and commit, as if it
    /// were still the system while it is in fact in `tenant` (or the other way round).
    /// `tenant` must come from the system's own records or a verified message, never from an
    /// unauthenticated request.
    ///
    /// ```
    /// use tenantkit_core::{with_conn, Database, Migrations, NewTenant, Result};
    ///
    /// # async fn demo(db: &Database) -> Result<()> {
    /// # let (tenant, tx) = db.create_tenant(NewTenant { name: "Acme".into(), slug: None }).await?;
    /// # tx.commit().await?;
    /// let mut tx = db.begin_system().await?;
    /// let mut acme = tx.in_tenant(tenant.id).await?;
    /// let id = acme.tenant_id();
    /// let members: i64 = with_conn!(&mut acme, |c| {
    ///     sqlx::query_scalar("SELECT count(*) FROM memberships WHERE tenant_id = $1")
    ///         .bind(id)
    ///         .fetch_one(c)
    ///         .await
    /// })?;
    /// acme.leave().await?;
    /// tx.commit().await?;
    /// assert_eq!(members, 0);
    /// # Ok(())
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<()> {
    /// # let db = Database::connect("sqlite::memory:").await?;
    /// # db.migrate(&Migrations::new()).await?;
    /// # demo(&db).await
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`crate::Error::Database`] when PostgreSQL refuses the settings (the transaction is
    /// then poisoned).
    pub async fn in_tenant(&mut self, tenant: TenantId) -> Result<InTenant<'_>> {
        self.set_rls(Some(tenant), false).await?;
        Ok(InTenant {
            tx: self,
            tenant,
            left: false,
        })
    }

    /// Whether a failed statement (or an [`InTenant`] dropped without
    /// [`leave`](InTenant::leave)) poisoned this transaction: its
    /// [`commit`](Self::commit) will refuse with [`crate::Error::Aborted`].
    pub fn is_aborted(&self) -> bool {
        self.core.poisoned
    }
}

/// A [`SystemTx`] acting in one tenant (see [`SystemTx::in_tenant`]): a [`Transaction`] for
/// [`with_conn!`](crate::with_conn) that reaches that tenant's rows, ended with
/// [`InTenant::leave`]. Dropped without `leave`, it poisons its system transaction.
pub struct InTenant<'a> {
    tx: &'a mut SystemTx,
    tenant: TenantId,
    left: bool,
}

impl sealed::Sealed for InTenant<'_> {}

impl Transaction for InTenant<'_> {
    fn core(&mut self) -> &mut TxCore {
        &mut self.tx.core
    }
}

impl fmt::Debug for InTenant<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InTenant")
            .field("tenant_id", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl InTenant<'_> {
    /// The tenant this handle acts in.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant
    }

    /// The connection, for backend-specific statements. See [`RawConn`].
    pub fn raw(&mut self) -> RawConn<'_> {
        raw(&mut self.tx.core)
    }

    /// Registers `hook` to run once the system transaction has committed (see
    /// [`SystemTx::after_commit`]).
    pub fn after_commit(&mut self, hook: impl FnOnce() + Send + 'static) {
        self.tx.core.after_commit(Box::new(hook));
    }

    /// Returns the system transaction to no tenant (on PostgreSQL: no tenant's rows, and the
    /// system's own access again), as it was before [`SystemTx::in_tenant`].
    ///
    /// # Errors
    /// [`crate::Error::Database`] when PostgreSQL refuses the settings (the transaction is
    /// then poisoned).
    pub async fn leave(mut self) -> Result<()> {
        // Marked first: a failure poisons the transaction itself, so the drop adds nothing.
        self.left = true;
        self.tx.set_rls(None, true).await
    }
}

impl Drop for InTenant<'_> {
    fn drop(&mut self) {
        if !self.left {
            // Without an async drop the settings cannot be put back here: make sure the
            // system transaction cannot commit in the wrong scope instead.
            self.tx.core.poisoned = true;
            tracing::error!(
                tenant = %self.tenant,
                "InTenant dropped without leave(): its system transaction is poisoned and \
                 will not commit"
            );
        }
    }
}
