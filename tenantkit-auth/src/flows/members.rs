//! Membership changes that end sessions: a demotion or a removal takes effect on the member's
//! sessions in the same transaction as the change and its audit entry.

use tenantkit_core::{ClientInfo, Membership, Permission, Principal, Role, TenantScope, UserId};

use super::{AuthFlows, MemberChange, MemberChangeKind, event};
use crate::{Result, RevocationScope};

impl AuthFlows {
    /// Changes `user`'s role, as `principal` (whose current role is read from the database).
    /// Only owners grant or take `owner`; the last owner stays. A demotion ends the member's
    /// sessions in this tenant, in the same transaction as the change and its audit entry.
    ///
    /// # Errors
    /// `forbidden`, `not_found` (not a member), `conflict` (the last owner).
    #[tracing::instrument(skip_all, fields(tenant = %principal.tenant_id(), user = %user))]
    pub async fn change_member_role(
        &self,
        client: &ClientInfo,
        principal: &Principal,
        user: UserId,
        role: Role,
    ) -> Result<Membership> {
        principal.require(Permission::ManageMembers)?;
        let mut tx = self.db.begin(&TenantScope::of(principal)).await?;
        let (membership, previous) = tx.change_role(user, role, principal.user_id()).await?;
        let entry = event(
            client,
            "member.role_changed",
            Some(principal.user_id()),
            "user",
            user,
        )
        .details(serde_json::json!({ "from": previous, "to": membership.role }));
        tx.audit(entry).await?;
        let change = MemberChange {
            kind: MemberChangeKind::RoleChanged,
            user_id: user,
            role: membership.role,
            previous: Some(previous),
            by: Some(principal.user_id()),
        };
        self.member_changed(&mut tx, change).await?;
        if membership.role < previous {
            // A demotion takes effect now, not when the member's access token expires.
            let scope = RevocationScope::User {
                user,
                tenant: Some(principal.tenant_id()),
                except: None,
            };
            let now = self.sessions.now();
            (self.sessions.revocations())
                .revoke_in(&mut tx, scope, "demoted", now)
                .await?;
        }
        tx.commit().await?;
        Ok(membership)
    }

    /// Removes `user` from the tenant, as `principal`. Only owners remove owners; never the
    /// last one. Their sessions in this tenant end in the same transaction.
    ///
    /// # Errors
    /// `forbidden`, `not_found` (not a member), `conflict` (the last owner).
    #[tracing::instrument(skip_all, fields(tenant = %principal.tenant_id(), user = %user))]
    pub async fn remove_member(
        &self,
        client: &ClientInfo,
        principal: &Principal,
        user: UserId,
    ) -> Result<Membership> {
        principal.require(Permission::ManageMembers)?;
        let mut tx = self.db.begin(&TenantScope::of(principal)).await?;
        let removed = tx.remove_member(user, principal.user_id()).await?;
        let entry = event(
            client,
            "member.removed",
            Some(principal.user_id()),
            "user",
            user,
        )
        .details(serde_json::json!({ "role": removed.role }));
        tx.audit(entry).await?;
        let change = MemberChange {
            kind: MemberChangeKind::Removed,
            user_id: user,
            role: removed.role,
            previous: None,
            by: Some(principal.user_id()),
        };
        self.member_changed(&mut tx, change).await?;
        let scope = RevocationScope::User {
            user,
            tenant: Some(principal.tenant_id()),
            except: None,
        };
        let now = self.sessions.now();
        (self.sessions.revocations())
            .revoke_in(&mut tx, scope, "removed", now)
            .await?;
        tx.commit().await?;
        Ok(removed)
    }
}
