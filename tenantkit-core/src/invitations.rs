//! Invitations: an admin invites an email address with a role; the holder of the mailed token
//! joins the tenant once.

use serde::Serialize;
use time::OffsetDateTime;

use crate::{Database, Email, InvitationId, Result, Role, TenantId, TenantTx, UserId, with_conn};

/// A pending or used invitation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Invitation {
    /// Its id.
    pub id: InvitationId,
    /// The tenant to join.
    pub tenant_id: TenantId,
    /// Who may accept it.
    pub email: Email,
    /// The role the new member gets.
    #[sqlx(try_from = "String")]
    pub role: Role,
    /// Who sent it (`None` for the operator, or when the sender's account is gone).
    pub invited_by: Option<UserId>,
    /// Whether the operator sent it (then no member's rights need to hold at acceptance).
    pub by_operator: bool,
    /// When it was sent.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it stops working.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When it was used, if it was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub accepted_at: Option<OffsetDateTime>,
}

const COLUMNS: &str =
    "id, tenant_id, email, role, invited_by, by_operator, created_at, expires_at, accepted_at";

/// The invitation `i`'s tenant is not deleted.
const TENANT_LIVE: &str = "NOT EXISTS (SELECT 1 FROM tenants t \
                           WHERE t.id = i.tenant_id AND t.deleted_at IS NOT NULL)";

/// At most this many pending invitations per tenant: invitations cannot become a mail cannon.
pub const MAX_PENDING_INVITATIONS: i64 = 200;

impl TenantTx {
    /// Seats taken: the tenant's members plus its pending (unexpired, unaccepted) invitations.
    ///
    /// Takes the tenant's lock first (PostgreSQL; SQLite has one writer): two concurrent
    /// invitations at the last seat count one after the other, never both the same free seat.
    ///
    /// # Errors
    /// [`crate::Error::Database`] on failure.
    pub async fn seats_in_use(&mut self) -> Result<u64> {
        self.lock_tenant().await?;
        let tenant = self.tenant_id();
        let now = crate::now();
        let used: i64 = with_conn!(self, |c| {
            sqlx::query_scalar(
                "SELECT (SELECT count(*) FROM memberships WHERE tenant_id = $1) + \
                 (SELECT count(*) FROM invitations WHERE tenant_id = $1 \
                  AND accepted_at IS NULL AND expires_at > $2)",
            )
            .bind(tenant)
            .bind(now)
            .fetch_one(c)
            .await
        })?;
        Ok(u64::try_from(used).unwrap_or(0))
    }

    /// Stores an invitation to this tenant, known by the hash of its token, sent by the member
    /// `invited_by` (or, with `None`, by the operator).
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] when the tenant was deleted; [`crate::Error::Conflict`] when
    /// the tenant already has [`MAX_PENDING_INVITATIONS`] pending ones;
    /// [`crate::Error::Database`] on failure.
    pub async fn create_invitation(
        &mut self,
        email: Email,
        role: Role,
        invited_by: Option<UserId>,
        token_hash: &[u8],
        expires_at: OffsetDateTime,
    ) -> Result<Invitation> {
        // Under the tenant's lock: the pending count below holds under concurrent invitations
        // (see `seats_in_use`), and a deleted tenant gets no invitation.
        self.require_live_tenant().await?;
        let tenant = self.tenant_id();
        let now = crate::now();
        let pending: i64 = with_conn!(self, |c| {
            sqlx::query_scalar(
                "SELECT count(*) FROM invitations \
                 WHERE tenant_id = $1 AND accepted_at IS NULL AND expires_at > $2",
            )
            .bind(tenant)
            .bind(now)
            .fetch_one(c)
            .await
        })?;
        if pending >= MAX_PENDING_INVITATIONS {
            return Err(crate::Error::Conflict(format!(
                "this tenant has {MAX_PENDING_INVITATIONS} pending invitations; \
                 withdraw some before sending more"
            )));
        }
        let invitation = Invitation {
            id: InvitationId::new(),
            tenant_id: tenant,
            email,
            role,
            invited_by,
            by_operator: invited_by.is_none(),
            created_at: now,
            expires_at,
            accepted_at: None,
        };
        with_conn!(self, |c| {
            sqlx::query(
                "INSERT INTO invitations (id, tenant_id, email, role, token_hash, invited_by, \
                 by_operator, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(invitation.id)
            .bind(invitation.tenant_id)
            .bind(&invitation.email)
            .bind(invitation.role.as_str())
            .bind(token_hash)
            .bind(invitation.invited_by)
            .bind(invitation.by_operator)
            .bind(invitation.created_at)
            .bind(invitation.expires_at)
            .execute(c)
            .await
            .map(drop)
        })?;
        Ok(invitation)
    }
}

impl Database {
    /// The open (unused, unexpired) invitation with this token hash, to a tenant that is not
    /// deleted; `Ok(None)` otherwise.
    /// Using it is [`TenantTx::accept_invitation`], in the transaction that adds the member.
    ///
    /// The token is looked up before its tenant is known. On PostgreSQL the application role
    /// cannot read the `invitations` table outside a tenant's scope; this lookup goes through
    /// `tenantkit_open_invitation`, a `SECURITY DEFINER` function that returns at most the one
    /// invitation whose token hash the caller already holds.
    ///
    /// # Errors
    /// [`crate::Error::Database`] on failure.
    pub async fn find_open_invitation(
        &self,
        token_hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<Option<Invitation>> {
        let mut tx = self.begin_system_read().await?;
        // A deleted tenant's invitations open nothing (its deletion removes them; this also
        // covers any left from before it did).
        let sql = match self.backend() {
            crate::Backend::Postgres => format!(
                "SELECT {COLUMNS} FROM tenantkit_open_invitation($1, $2) i WHERE {TENANT_LIVE}"
            ),
            _ => format!(
                "SELECT {COLUMNS} FROM invitations i WHERE i.token_hash = $1 \
                 AND i.accepted_at IS NULL AND i.expires_at > $2 AND {TENANT_LIVE}"
            ),
        };
        Ok(with_conn!(&mut tx, |c| {
            sqlx::query_as(&sql)
                .bind(token_hash)
                .bind(now)
                .fetch_optional(c)
                .await
        })?)
    }
}

impl TenantTx {
    /// Marks the invitation accepted, only if it is still open and its tenant is not deleted;
    /// `false` when someone used it first, it expired meanwhile, or the tenant is deleted.
    ///
    /// # Errors
    /// [`crate::Error::Database`] on failure.
    pub async fn accept_invitation(
        &mut self,
        id: InvitationId,
        now: OffsetDateTime,
    ) -> Result<bool> {
        // The tenant's lock first (before the invitation's row): the same order as
        // `delete_tenant`, so an acceptance and a deletion never deadlock, and an invitation
        // left over from before deletions removed them still opens nothing.
        match self.require_live_tenant().await {
            Ok(()) => {}
            Err(crate::Error::NotFound) => return Ok(false),
            Err(other) => return Err(other),
        }
        let tenant = self.tenant_id();
        let updated = with_conn!(self, |c| {
            sqlx::query(
                "UPDATE invitations SET accepted_at = $1 \
                 WHERE id = $2 AND tenant_id = $3 AND accepted_at IS NULL AND expires_at > $1",
            )
            .bind(now)
            .bind(id)
            .bind(tenant)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(updated == 1)
    }
}

impl TenantTx {
    /// One page of this tenant's pending (unused, unexpired) invitations, oldest first.
    ///
    /// # Errors
    /// [`crate::Error::Database`] on failure.
    pub async fn pending_invitations(
        &mut self,
        page: crate::PageRequest,
    ) -> Result<crate::Page<Invitation>> {
        let tenant = self.tenant_id();
        let sql = format!(
            "SELECT {COLUMNS} FROM invitations WHERE tenant_id = $1 AND id > $2 \
             AND accepted_at IS NULL AND expires_at > $3 ORDER BY id LIMIT $4"
        );
        let rows: Vec<Invitation> = with_conn!(self, |c| {
            sqlx::query_as(&sql)
                .bind(tenant)
                .bind(page.after_key())
                .bind(crate::now())
                .bind(page.fetch_count())
                .fetch_all(c)
                .await
        })?;
        Ok(crate::Page::from_rows(rows, &page, |i| i.id.as_uuid()))
    }

    /// Withdraws a pending invitation of this tenant; its token stops working.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] when there is no such pending invitation in this tenant.
    pub async fn revoke_invitation(&mut self, id: InvitationId) -> Result<()> {
        let tenant = self.tenant_id();
        let deleted = with_conn!(self, |c| {
            sqlx::query(
                "DELETE FROM invitations WHERE id = $1 AND tenant_id = $2 AND accepted_at IS NULL",
            )
            .bind(id)
            .bind(tenant)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
        })?;
        if deleted == 0 {
            return Err(crate::Error::NotFound);
        }
        Ok(())
    }
}
