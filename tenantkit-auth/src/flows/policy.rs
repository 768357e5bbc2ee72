//! A tenant's sign-in policy, set by its owner.
//!
//! **SSO required** refuses every sign-in into the tenant that did not come through its
//! identity provider (`403 sso_required`): password logins, tenant switches and invitations
//! with a password. Owners keep a break-glass password sign-in, audited as
//! `auth.sso_bypassed`, so a broken provider never locks the tenant out. Turning it on needs a
//! connection, and ends the sessions of non-owners that did not sign in through it.
//!
//! **MFA required** makes every new sign-in into the tenant give a second factor (`otp`, or
//! `sso_mfa`: the tenant's own identity provider checked one). An account without one gets
//! [`SignIn::MfaEnrollmentRequired`](super::SignIn::MfaEnrollmentRequired) and a token that can
//! only enroll ([`AuthFlows::mfa_enroll_pending`], then [`AuthFlows::mfa_confirm_pending`],
//! which signs in with `otp`); a tenant switch into the tenant from a session without `otp` is
//! refused with `insufficient_user_authentication`.
//!
//! Turning the policy on ends, in the same transaction, every live session of the tenant that
//! did not sign in with a second factor (their refresh tokens stop working; their access tokens
//! end with their short lifetime, or at once behind a strict layer); the owner turning it on
//! must hold a session with `otp` themselves, so nobody locks the tenant out by accident.

use serde::{Deserialize, Serialize};
use tenantkit_core::{ClientInfo, Principal, Role, SessionId, TenantId, TenantTx, amr, with_conn};

use super::AuthFlows;
use crate::{Error, Result};

/// A tenant's sign-in policy (`GET /v1/tenant` shows it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct TenantPolicy {
    /// Every sign-in into the tenant gives a second factor; an account without one must
    /// enroll before its first session there.
    pub mfa_required: bool,
    /// Members sign in through the tenant's identity provider only (owners keep an audited
    /// password sign-in).
    pub sso_required: bool,
}

impl TenantPolicy {
    /// Whether `amr` holds a second factor for this tenant's policy: ours (`otp`), or its
    /// identity provider's (`sso_mfa`, which a session only carries in the tenant whose
    /// provider vouched for it).
    pub(crate) fn second_factor(amr: &[String]) -> bool {
        amr.iter().any(|m| m == amr::OTP || m == amr::SSO_MFA)
    }
}

/// A change of a tenant's sign-in policy (`PATCH /v1/tenant`): the fields given change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TenantPolicyPatch {
    /// Turns "MFA required" on or off.
    #[serde(default)]
    pub mfa_required: Option<bool>,
    /// Turns "SSO required" on or off.
    #[serde(default)]
    pub sso_required: Option<bool>,
}

impl TenantPolicyPatch {
    /// A patch turning "MFA required" on or off.
    pub fn mfa_required(on: bool) -> Self {
        Self {
            mfa_required: Some(on),
            sso_required: None,
        }
    }

    /// A patch turning "SSO required" on or off.
    pub fn sso_required(on: bool) -> Self {
        Self {
            mfa_required: None,
            sso_required: Some(on),
        }
    }

    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.mfa_required.is_none() && self.sso_required.is_none()
    }
}

impl AuthFlows {
    /// The policy of the tenant of `tx`.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn tenant_policy(&self, tx: &mut TenantTx) -> Result<TenantPolicy> {
        let tenant = tx.tenant_id();
        read_policy(tx, tenant).await
    }

    /// The policy of `tenant`, for a sign-in (which has no tenant transaction yet).
    pub(crate) async fn policy_of(&self, tenant: TenantId) -> Result<TenantPolicy> {
        let mut tx = self.db.begin_system_read().await?;
        let policy = read_policy(&mut tx, tenant).await?;
        tx.commit().await?;
        Ok(policy)
    }

    /// Changes the policy of the caller's tenant inside `tx` (the caller's tenant
    /// transaction, so it commits with the rest of the request's change, or not at all), and
    /// audits it as `tenant.policy_changed`. Turning "MFA required" on revokes the tenant's
    /// live sessions that signed in without a second factor, published once `tx` commits.
    ///
    /// # Errors
    /// `403 forbidden` unless the caller is the tenant's owner;
    /// [`Error::InsufficientAuthentication`] when turning "MFA required" on from a session
    /// without a second factor; `409 conflict` when turning "SSO required" on without a
    /// single sign-on connection or while a non-owner member has not linked the provider, or
    /// "MFA required" on a server without second factors; storage errors.
    pub async fn update_tenant_policy(
        &self,
        tx: &mut TenantTx,
        client: &ClientInfo,
        principal: &Principal,
        patch: TenantPolicyPatch,
    ) -> Result<TenantPolicy> {
        let tenant = tx.tenant_id();
        if principal.role() != Role::Owner || principal.tenant_id() != tenant {
            return Err(tenantkit_core::Error::Forbidden.into());
        }
        let before = read_policy(tx, tenant).await?;
        let after = TenantPolicy {
            mfa_required: patch.mfa_required.unwrap_or(before.mfa_required),
            sso_required: patch.sso_required.unwrap_or(before.sso_required),
        };
        let mfa_on = after.mfa_required && !before.mfa_required;
        let sso_on = after.sso_required && !before.sso_required;
        if mfa_on && !TenantPolicy::second_factor(principal.amr()) {
            return Err(Error::InsufficientAuthentication(amr::OTP));
        }
        if sso_on {
            if sso_connections(tx, tenant).await? == 0 {
                return Err(tenantkit_core::Error::Conflict(
                    "the tenant has no single sign-on connection: connect its identity \
                     provider first"
                        .into(),
                )
                .into());
            }
            // A member who cannot sign in through the provider yet would be locked out: each
            // links their account first (`POST /v1/sso/link`), or joins through it.
            let unlinked = with_conn!(tx, |c| {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM memberships m WHERE m.tenant_id = $1 \
                     AND m.role <> 'owner' AND NOT EXISTS (SELECT 1 FROM sso_identities i \
                     JOIN sso_connections s ON s.issuer = i.issuer AND s.tenant_id = m.tenant_id \
                     WHERE i.user_id = m.user_id)",
                )
                .bind(tenant)
                .fetch_one(c)
                .await
            })?;
            if unlinked > 0 {
                return Err(tenantkit_core::Error::Conflict(format!(
                    "{unlinked} members cannot sign in through the identity provider yet: \
                     each links their account first (POST /v1/sso/link)"
                ))
                .into());
            }
        }
        if mfa_on && self.mfa.is_none() {
            return Err(tenantkit_core::Error::Conflict(
                "second factors are not set up on this server".into(),
            )
            .into());
        }
        if after == before {
            return Ok(after);
        }
        let now = self.sessions.now();
        with_conn!(tx, |c| {
            sqlx::query(
                "INSERT INTO tenant_auth_policies (tenant_id, mfa_required, sso_required, \
                 updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id) DO UPDATE \
                 SET mfa_required = excluded.mfa_required, \
                 sso_required = excluded.sso_required, updated_at = excluded.updated_at",
            )
            .bind(tenant)
            .bind(after.mfa_required)
            .bind(after.sso_required)
            .bind(now)
            .execute(c)
            .await
            .map(drop)
        })?;
        let mut ended = 0;
        if mfa_on || sso_on {
            // The sessions the new policy would not have let in: without a second factor
            // (MFA required), or a non-owner's not through the provider (SSO required).
            let outside = with_conn!(tx, |c| {
                sqlx::query_scalar::<_, SessionId>(
                    "SELECT s.id FROM sessions s JOIN memberships m \
                     ON m.tenant_id = s.tenant_id AND m.user_id = s.user_id \
                     WHERE s.tenant_id = $1 AND s.revoked_at IS NULL AND (\
                     ($2 AND (' ' || s.amr || ' ') NOT LIKE '% otp %' \
                         AND (' ' || s.amr || ' ') NOT LIKE '% sso_mfa %') \
                     OR ($3 AND m.role <> 'owner' AND (' ' || s.amr || ' ') NOT LIKE '% sso %'))",
                )
                .bind(tenant)
                .bind(mfa_on)
                .bind(sso_on)
                .fetch_all(c)
                .await
            })?;
            let reason = if mfa_on {
                "mfa_required"
            } else {
                "sso_required"
            };
            ended = (self.sessions.revocations())
                .revoke_listed_in(tx, &outside, reason, now)
                .await?
                .len();
        }
        let event = client
            .event("tenant.policy_changed", Some(principal.user_id()))
            .target("tenant", tenant)
            .details(serde_json::json!({
                "mfa_required": { "from": before.mfa_required, "to": after.mfa_required },
                "sso_required": { "from": before.sso_required, "to": after.sso_required },
                "sessions_ended": ended,
            }));
        tx.audit(event).await?;
        tracing::info!(tenant = %tenant, mfa_required = after.mfa_required, sso_required = after.sso_required, sessions_ended = ended, "tenant policy changed");
        Ok(after)
    }
}

/// How many single sign-on connections `tenant` has ("SSO required" needs one).
pub(crate) async fn sso_connections(tx: &mut TenantTx, tenant: TenantId) -> Result<i64> {
    Ok(with_conn!(tx, |c| {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sso_connections WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(c)
            .await
    })?)
}

async fn read_policy<T: tenantkit_core::Transaction>(
    tx: &mut T,
    tenant: TenantId,
) -> Result<TenantPolicy> {
    let row = with_conn!(tx, |c| {
        sqlx::query_as::<_, (bool, bool)>(
            "SELECT mfa_required, sso_required FROM tenant_auth_policies WHERE tenant_id = $1",
        )
        .bind(tenant)
        .fetch_optional(c)
        .await
    })?;
    let (mfa_required, sso_required) = row.unwrap_or_default();
    Ok(TenantPolicy {
        mfa_required,
        sso_required,
    })
}
