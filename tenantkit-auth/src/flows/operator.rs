//! What the operator does from the command line: create a tenant with its owner, add a user.

use serde::Serialize;
use tenantkit_core::{
    ClientInfo, Email, Error as CoreError, NewTenant, NewUser, Role, Slug, TenantId, TenantScope,
    UserId, with_conn,
};

use super::{AuthFlows, event};
use crate::{Password, Result};

/// A tenant made by the operator.
#[derive(Debug, Clone, Serialize)]
pub struct TenantCreated {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Its slug.
    pub slug: Slug,
    /// Its owner's new account.
    pub owner_id: UserId,
}

/// A user added to a tenant by the operator.
#[derive(Debug, Clone, Serialize)]
pub struct UserAdded {
    /// The user.
    pub user_id: UserId,
    /// The tenant.
    pub tenant_id: TenantId,
    /// Their role there.
    pub role: Role,
    /// Whether the account was created now.
    pub created: bool,
}

impl AuthFlows {
    /// Deletes the tenant `tenant_slug` softly, as the operator: every member is removed and
    /// every session in it ends, in one transaction with the audit entry `tenant.deleted`; the
    /// tenant row and its audit chain stay (see [`tenantkit_core::TenantTx::delete_tenant`]).
    ///
    /// # Errors
    /// `not_found` for an unknown or already deleted tenant.
    #[tracing::instrument(skip_all)]
    pub async fn delete_tenant(
        &self,
        client: &ClientInfo,
        tenant_slug: &str,
    ) -> Result<tenantkit_core::Tenant> {
        let slug = Slug::parse(tenant_slug)?;
        let tenant = self
            .db
            .find_tenant_by_slug(&slug)
            .await?
            .ok_or(CoreError::NotFound)?;
        let mut tx = self.db.begin(&TenantScope::for_system(tenant.id)).await?;
        let deleted = tx
            .delete_tenant(event(client, "tenant.deleted", None, "tenant", tenant.id))
            .await?;
        // The tenant's sessions are its rows: they end in the same transaction.
        with_conn!(&mut tx, |c| {
            sqlx::query(
                "UPDATE sessions SET revoked_at = $1, revoked_reason = 'tenant_deleted' \
                 WHERE tenant_id = $2 AND revoked_at IS NULL",
            )
            .bind(tenantkit_core::now())
            .bind(tenant.id)
            .execute(c)
            .await
            .map(drop)
        })?;
        tx.commit().await?;
        tracing::info!(tenant = %tenant.id, "tenant deleted");
        Ok(deleted)
    }

    /// Creates a tenant with a new owner account, audited as the operator's `tenant.created`.
    ///
    /// # Errors
    /// `validation_failed` (email, name, slug, a weak password), `conflict` (taken email or
    /// slug).
    #[tracing::instrument(skip_all)]
    pub async fn create_tenant(
        &self,
        client: &ClientInfo,
        name: &str,
        slug: Option<&str>,
        owner_email: &str,
        password: &Password,
    ) -> Result<TenantCreated> {
        let email = Email::parse(owner_email)?;
        let slug = slug.map(Slug::parse).transpose()?;
        let hash = self.passwords.hash_new(password, "password").await?;
        let (tenant, mut tx) = self
            .db
            .create_tenant(NewTenant {
                name: name.to_owned(),
                slug,
            })
            .await?;
        let owner = tx
            .create_user(NewUser {
                email,
                password_hash: Some(hash),
            })
            .await?;
        tx.add_member(owner.id, Role::Owner).await?;
        let entry = event(client, "tenant.created", None, "tenant", tenant.id)
            .details(serde_json::json!({ "owner_id": owner.id, "by": "operator" }));
        tx.audit(entry).await?;
        tx.commit().await?;
        Ok(TenantCreated {
            tenant_id: tenant.id,
            slug: tenant.slug,
            owner_id: owner.id,
        })
    }

    /// Adds a user to the tenant `tenant_slug` with `role`, creating the account (with
    /// `password`) if the address is new; audited as the operator's `member.added`.
    ///
    /// # Errors
    /// `not_found` for an unknown tenant; `validation_failed`; `conflict` when already a
    /// member.
    #[tracing::instrument(skip_all)]
    pub async fn add_user(
        &self,
        client: &ClientInfo,
        email: &str,
        tenant_slug: &str,
        role: Role,
        password: Option<&Password>,
    ) -> Result<UserAdded> {
        let email = Email::parse(email)?;
        let slug = Slug::parse(tenant_slug)?;
        let tenant = self
            .db
            .find_tenant_by_slug(&slug)
            .await?
            .ok_or(CoreError::NotFound)?;
        let existing = self.db.find_user_by_email(&email).await?;
        let hash = match (&existing, password) {
            (Some(_), _) => None,
            (None, Some(password)) => Some(self.passwords.hash_new(password, "password").await?),
            (None, None) => {
                return Err(
                    CoreError::invalid("password", "a new account needs a password").into(),
                );
            }
        };
        // The operator acts for this tenant; its id comes from our own records.
        let mut tx = self.db.begin(&TenantScope::for_system(tenant.id)).await?;
        let (user, created) = match existing {
            Some(user) => (user, false),
            None => (
                tx.create_user(NewUser {
                    email,
                    password_hash: hash,
                })
                .await?,
                true,
            ),
        };
        tx.add_member(user.id, role).await?;
        let entry = event(client, "member.added", None, "user", user.id)
            .details(serde_json::json!({ "role": role, "created": created, "by": "operator" }));
        tx.audit(entry).await?;
        tx.commit().await?;
        Ok(UserAdded {
            user_id: user.id,
            tenant_id: tenant.id,
            role,
            created,
        })
    }
}
