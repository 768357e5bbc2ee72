//! What the operator does from the command line: create a tenant with its owner, add a user.

use serde::Serialize;
use tenantkit_core::{
    ClientInfo, Email, Error as CoreError, NewTenant, NewUser, Role, Slug, TenantId, TenantScope,
    UserId,
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

/// What `user create` did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum UserAdded {
    /// A verified account was made a member.
    Attached {
        /// The user.
        user_id: UserId,
        /// The tenant.
        tenant_id: TenantId,
        /// Their role there.
        role: Role,
    },
    /// The address has no account, or one whose address is unproven: nothing was attached; an
    /// invitation went to the address (accepting it proves the mailbox).
    Invited {
        /// The invitation.
        invitation_id: tenantkit_core::InvitationId,
        /// The tenant.
        tenant_id: TenantId,
        /// The role it grants.
        role: Role,
        /// Whether the mailer took the invitation (when not, revoke it and try again once
        /// mail works: its token went nowhere).
        mailed: bool,
    },
}

impl AuthFlows {
    /// Deletes the tenant `tenant_slug` softly, as the operator: every member is removed and
    /// every session in it ends and every pending invitation to it is deleted, in one
    /// transaction with the audit entry `tenant.deleted`; the tenant row and its audit chain
    /// stay (see [`tenantkit_core::TenantTx::delete_tenant`]). Nothing grants a session in it
    /// afterwards: invitations, `user create`, login, switch and refresh all refuse it.
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
        let scope = crate::RevocationScope::Tenant(tenant.id);
        (self.sessions.revocations())
            .revoke_in(&mut tx, scope, "tenant_deleted", self.sessions.now())
            .await?;
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

    /// Adds `email` to the tenant `tenant_slug` with `role`, as the operator (audited). A
    /// verified account is attached at once. An unverified account is *unclaimed* (anyone can
    /// sign up with any address): attaching it would hand the tenant to whoever registered it,
    /// so, as for an unknown address, an invitation is mailed instead.
    ///
    /// # Errors
    /// `not_found` for an unknown or deleted tenant; `validation_failed`; `conflict` when
    /// already a member.
    #[tracing::instrument(skip_all)]
    pub async fn add_user(
        &self,
        client: &ClientInfo,
        email: &str,
        tenant_slug: &str,
        role: Role,
    ) -> Result<UserAdded> {
        let email = Email::parse(email)?;
        let slug = Slug::parse(tenant_slug)?;
        let tenant = self
            .db
            .find_tenant_by_slug(&slug)
            .await?
            // A deleted tenant takes nobody back.
            .filter(|tenant| tenant.deleted_at.is_none())
            .ok_or(CoreError::NotFound)?;
        let existing = self.db.find_user_by_email(&email).await?;
        // The operator acts for this tenant; its id comes from our own records.
        let mut tx = self.db.begin(&TenantScope::for_system(tenant.id)).await?;
        // Under the tenant's lock: a deletion that committed since the look-up above is seen.
        tx.require_live_tenant().await?;
        if let Some(user) = &existing
            && tx.member(user.id).await?.is_some()
        {
            return Err(CoreError::Conflict("that address is already a member".into()).into());
        }
        let added = match existing {
            Some(user) if user.email_verified_at.is_some() => {
                tx.add_member(user.id, role).await?;
                let entry = event(client, "member.added", None, "user", user.id)
                    .details(serde_json::json!({ "role": role, "by": "operator" }));
                tx.audit(entry).await?;
                UserAdded::Attached {
                    user_id: user.id,
                    tenant_id: tenant.id,
                    role,
                }
            }
            _ => {
                let (invitation, mail) = self
                    .store_invitation(&mut tx, client, email, role, None)
                    .await?;
                tx.commit().await?;
                // Awaited, not in the background: the operator's command exits right after,
                // and must say whether the mail went out.
                let mailed = match self.mailer.send(mail).await {
                    Ok(()) => true,
                    Err(err) => {
                        tracing::error!(error = %err, "sending the invitation failed");
                        false
                    }
                };
                return Ok(UserAdded::Invited {
                    invitation_id: invitation.id,
                    tenant_id: tenant.id,
                    role,
                    mailed,
                });
            }
        };
        tx.commit().await?;
        Ok(added)
    }
}
