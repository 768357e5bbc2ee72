//! Managing a tenant: its name, its members and their roles.

use serde::Serialize;
use time::OffsetDateTime;

use crate::with_conn;

/// A member of a tenant as listed to its members: who, their email, their role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Member {
    /// The user.
    pub user_id: UserId,
    /// Their email address.
    pub email: crate::Email,
    /// Their role here.
    #[sqlx(try_from = "String")]
    pub role: Role,
    /// When they joined.
    #[serde(with = "time::serde::rfc3339")]
    pub joined_at: OffsetDateTime,
}
use crate::{
    Error, Membership, Page, PageRequest, Result, Role, Tenant, TenantId, TenantTx, UserId,
};

/// Serializes changes that must see a consistent `tenant` on PostgreSQL by locking its row;
/// SQLite already runs one writer at a time.
pub(crate) async fn lock_tenant<T: crate::Transaction>(tx: &mut T, tenant: TenantId) -> Result<()> {
    #[cfg(feature = "postgres")]
    {
        #[allow(irrefutable_let_patterns)] // Irrefutable when PostgreSQL is the only backend.
        if let crate::RawConn::Postgres(conn) = crate::sql::raw_of(tx) {
            // NO KEY UPDATE: serializes with other appenders, but not with the foreign-key
            // checks (FOR KEY SHARE) that inserts into tenant tables take on this row;
            // FOR UPDATE would deadlock two concurrent inserts-then-audits.
            sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE")
                .bind(tenant)
                .execute(conn)
                .await?;
        }
    }
    #[cfg(not(feature = "postgres"))]
    let _ = (tx, tenant);
    Ok(())
}

impl TenantTx {
    /// Serializes changes that must see a consistent tenant (audit chain, owner count).
    pub(crate) async fn lock_tenant(&mut self) -> Result<()> {
        let tenant = self.tenant_id();
        lock_tenant(self, tenant).await
    }

    /// This transaction's tenant, deleted or not (its [`Tenant::deleted_at`] says which).
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such tenant.
    pub async fn tenant(&mut self) -> Result<Tenant> {
        let tenant = self.tenant_id();
        let sql = format!(
            "SELECT {} FROM tenants WHERE id = $1",
            crate::directory::TENANT_COLUMNS
        );
        let found: Option<Tenant> = with_conn!(self, |c| {
            sqlx::query_as(&sql).bind(tenant).fetch_optional(c).await
        })?;
        found.ok_or(Error::NotFound)
    }

    /// Takes the tenant's lock and checks that the tenant is not deleted: a change that must
    /// not reach a deleted tenant (a new member of an existing tenant, a new invitation)
    /// calls this first, so it
    /// either commits before a concurrent [`TenantTx::delete_tenant`] (which then removes it)
    /// or sees the deletion.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the tenant does not exist or was deleted.
    pub async fn require_live_tenant(&mut self) -> Result<()> {
        self.lock_tenant().await?;
        let tenant = self.tenant_id();
        // Read after the lock: under READ COMMITTED this statement sees a deletion that
        // committed while we waited for the lock.
        let deleted_at: Option<Option<OffsetDateTime>> = with_conn!(self, |c| {
            sqlx::query_scalar("SELECT deleted_at FROM tenants WHERE id = $1")
                .bind(tenant)
                .fetch_optional(c)
                .await
        })?;
        match deleted_at {
            Some(None) => Ok(()),
            _ => Err(Error::NotFound),
        }
    }

    /// Renames this tenant (the slug never changes).
    ///
    /// # Errors
    /// [`Error::Validation`] for an empty or over-long name.
    pub async fn rename_tenant(&mut self, name: &str) -> Result<Tenant> {
        let name = name.trim();
        let mut errors = Vec::new();
        crate::values::check_text(&mut errors, "name", name, 200);
        crate::values::finish_validation(errors)?;
        let tenant = self.tenant_id();
        with_conn!(self, |c| {
            sqlx::query("UPDATE tenants SET name = $1 WHERE id = $2")
                .bind(name)
                .bind(tenant)
                .execute(c)
                .await
                .map(drop)
        })?;
        self.tenant().await
    }

    /// Deletes this tenant softly, as `actor` (or the operator): every member is removed (and
    /// with them their teams' memberships), every pending invitation is deleted (its token
    /// stops working), the tenant is marked deleted, and the deletion is audited, all in this
    /// transaction. The tenant row and its audit chain stay: the chain can always be verified
    /// and exported. Its content rows stay too, unreachable, until purged by their owners.
    ///
    /// A deleted tenant stays deleted: [`TenantTx::require_live_tenant`] and
    /// [`TenantTx::create_invitation`] refuse it, [`TenantTx::accept_invitation`] accepts
    /// nothing in it, and [`crate::Database::memberships_of`] never lists it, so no login,
    /// switch or refresh gets a session in it. Its slug stays taken.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the tenant is already deleted.
    pub async fn delete_tenant(&mut self, event: crate::AuditEvent) -> Result<Tenant> {
        self.lock_tenant().await?;
        let tenant = self.tenant_id();
        let at = crate::now();
        let marked = with_conn!(self, |c| {
            sqlx::query("UPDATE tenants SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL")
                .bind(at)
                .bind(tenant)
                .execute(c)
                .await
                .map(|done| done.rows_affected())
        })?;
        if marked == 0 {
            return Err(Error::NotFound);
        }
        let removed = with_conn!(self, |c| {
            sqlx::query("DELETE FROM memberships WHERE tenant_id = $1")
                .bind(tenant)
                .execute(c)
                .await
                .map(|done| done.rows_affected())
        })?;
        // Pending invitations would otherwise let anyone holding a mailed token back in.
        let invitations_deleted = with_conn!(self, |c| {
            sqlx::query("DELETE FROM invitations WHERE tenant_id = $1 AND accepted_at IS NULL")
                .bind(tenant)
                .execute(c)
                .await
                .map(|done| done.rows_affected())
        })?;
        let event = event.details(serde_json::json!({
            "members_removed": removed,
            "invitations_deleted": invitations_deleted,
        }));
        self.audit(event).await?;
        self.tenant().await
    }

    /// One page of this tenant's members, in the order they joined.
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    pub async fn members(&mut self, page: PageRequest) -> Result<Page<Member>> {
        let tenant = self.tenant_id();
        let rows: Vec<Member> = with_conn!(self, |c| {
            sqlx::query_as(
                "SELECT m.user_id, u.email, m.role, m.created_at AS joined_at \
                 FROM memberships m JOIN users u ON u.id = m.user_id \
                 WHERE m.tenant_id = $1 AND m.user_id > $2 ORDER BY m.user_id LIMIT $3",
            )
            .bind(tenant)
            .bind(UserId::from_uuid(page.after_key()))
            .bind(page.fetch_count())
            .fetch_all(c)
            .await
        })?;
        Ok(Page::from_rows(rows, &page, |m| m.user_id.as_uuid()))
    }

    /// The acting user's role, read under the tenant lock: never trust the role in an access
    /// token for membership changes (a just-demoted owner's token still says `owner`).
    async fn actor_role(&mut self, actor: UserId) -> Result<Role> {
        let role = self
            .member(actor)
            .await?
            .map(|m| m.role)
            .ok_or(Error::Forbidden)?;
        if role.allows(crate::Permission::ManageMembers) {
            Ok(role)
        } else {
            Err(Error::Forbidden)
        }
    }

    async fn owner_count(&mut self) -> Result<i64> {
        let tenant = self.tenant_id();
        Ok(with_conn!(self, |c| {
            sqlx::query_scalar(
                "SELECT count(*) FROM memberships WHERE tenant_id = $1 AND role = 'owner'",
            )
            .bind(tenant)
            .fetch_one(c)
            .await
        })?)
    }

    /// Changes a member's role, as `actor` (whose current role is read here). Only an owner may make or unmake owners, and
    /// the last owner can never be demoted.
    ///
    /// # Errors
    /// [`Error::NotFound`] for a non-member; [`Error::Forbidden`] when the actor may not
    /// grant or take the owner role; [`Error::Conflict`] for the last owner.
    pub async fn change_role(
        &mut self,
        user: UserId,
        role: Role,
        actor: UserId,
    ) -> Result<(Membership, Role)> {
        self.lock_tenant().await?;
        let actor_role = self.actor_role(actor).await?;
        let current = self.member(user).await?.ok_or(Error::NotFound)?;
        // Owner is granted and taken only by owners: an admin cannot escalate anyone
        // (themselves included) to owner, nor demote one.
        if (role == Role::Owner || current.role == Role::Owner) && actor_role != Role::Owner {
            return Err(Error::Forbidden);
        }
        if current.role == Role::Owner && role != Role::Owner && self.owner_count().await? <= 1 {
            return Err(Error::Conflict(
                "the last owner cannot be demoted; make someone else owner first".into(),
            ));
        }
        let tenant = self.tenant_id();
        with_conn!(self, |c| {
            sqlx::query("UPDATE memberships SET role = $1 WHERE tenant_id = $2 AND user_id = $3")
                .bind(role.as_str())
                .bind(tenant)
                .bind(user)
                .execute(c)
                .await
                .map(drop)
        })?;
        Ok((
            Membership {
                role,
                ..current.clone()
            },
            current.role,
        ))
    }

    /// Removes a member, as `actor` (whose current role is read here). Only an owner may remove an owner, and the last
    /// owner can never be removed.
    ///
    /// # Errors
    /// [`Error::NotFound`] for a non-member; [`Error::Forbidden`]; [`Error::Conflict`] for the
    /// last owner.
    pub async fn remove_member(&mut self, user: UserId, actor: UserId) -> Result<Membership> {
        self.lock_tenant().await?;
        let actor_role = self.actor_role(actor).await?;
        let current = self.member(user).await?.ok_or(Error::NotFound)?;
        if current.role == Role::Owner {
            if actor_role != Role::Owner {
                return Err(Error::Forbidden);
            }
            if self.owner_count().await? <= 1 {
                return Err(Error::Conflict("the last owner cannot be removed".into()));
            }
        }
        let tenant = self.tenant_id();
        with_conn!(self, |c| {
            sqlx::query("DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2")
                .bind(tenant)
                .bind(user)
                .execute(c)
                .await
                .map(drop)
        })?;
        Ok(current)
    }
}
