//! The verified caller.

use std::collections::BTreeSet;

use time::OffsetDateTime;

use crate::{Error, Permission, Result, Role, SessionId, TenantId, UserId};

/// Authentication method references (`amr`, RFC 8176) that tenantkit records. Other values
/// (an identity provider's, for single sign-on) are carried as they come.
pub mod amr {
    /// A password (sign-in, signup, accepting an invitation with a password).
    pub const PASSWORD: &str = "pwd";
    /// A one-time password (TOTP or a code sent by mail).
    pub const OTP: &str = "otp";
    /// More than one factor.
    pub const MFA: &str = "mfa";
    /// A tenant's own identity provider (single sign-on). Not an RFC 8176 value: tenantkit's.
    /// A provider's own values are never stored as they come (a tenant's provider could then
    /// claim `otp` for anyone it signs in): see [`SSO_MFA`].
    pub const SSO: &str = "sso";
    /// The tenant's identity provider said it checked more than one factor (its `amr` held
    /// `mfa`, or several methods). Counts as a second factor for that tenant's "MFA required"
    /// policy only: a tenant switch or an invitation into another tenant drops it (and
    /// [`SSO`]). Never satisfies a step-up for [`OTP`], which is this server's own factor.
    pub const SSO_MFA: &str = "sso_mfa";
}

/// The verified caller of a request: who they are, in which tenant, with which role.
///
/// A `Principal` must only be built from verified credentials (the auth layer builds it from a
/// verified access token and puts it in the request extensions). Every tenant-scoped query takes
/// its tenant from here, never from the request path or body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    user_id: UserId,
    tenant_id: TenantId,
    role: Role,
    scopes: BTreeSet<String>,
    session_id: SessionId,
    amr: Vec<String>,
    expires_at: Option<OffsetDateTime>,
}

impl Principal {
    /// Builds a principal from verified claims.
    ///
    /// Call this only with values taken from a verified token or a trusted store: whoever holds
    /// a `Principal` can act in its tenant.
    pub fn new(
        user_id: UserId,
        tenant_id: TenantId,
        role: Role,
        scopes: impl IntoIterator<Item = String>,
        session_id: SessionId,
    ) -> Self {
        Self {
            user_id,
            tenant_id,
            role,
            scopes: scopes.into_iter().collect(),
            session_id,
            amr: Vec::new(),
            expires_at: None,
        }
    }

    /// The same caller, authenticated with `methods` (RFC 8176 `amr` values, see [`amr`]):
    /// what the session's sign-in proved. Duplicates and empty values are dropped; the order
    /// is kept.
    pub fn with_amr(mut self, methods: impl IntoIterator<Item = String>) -> Self {
        self.amr.clear();
        for method in methods {
            if !method.is_empty() && !self.amr.contains(&method) {
                self.amr.push(method);
            }
        }
        self
    }

    /// The same caller, whose credentials stop being valid at `expires_at` (the access
    /// token's `exp`).
    pub fn with_expires_at(mut self, expires_at: OffsetDateTime) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    /// The same caller with `role`: for an authentication layer that read the caller's
    /// current role from a trusted store (a role change takes effect before the token expires).
    pub fn with_role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// The calling user.
    pub fn user_id(&self) -> UserId {
        self.user_id
    }

    /// The tenant the caller acts in.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    /// The caller's role in [`Self::tenant_id`].
    pub fn role(&self) -> Role {
        self.role
    }

    /// The OAuth-style scopes the token was issued with.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scopes.iter().map(String::as_str)
    }

    /// Whether the token carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.contains(scope)
    }

    /// The login session (refresh-token family) the token belongs to.
    pub fn session_id(&self) -> SessionId {
        self.session_id
    }

    /// How the caller signed in: the RFC 8176 `amr` values of the session (for example
    /// `["pwd"]` after a password sign-in), empty when unknown (a principal not built from a
    /// token, or a token issued without them). They describe the sign-in, not the request:
    /// a refreshed token keeps the methods of the sign-in that started its session.
    pub fn amr(&self) -> &[String] {
        &self.amr
    }

    /// Whether the sign-in used `method` (an RFC 8176 value such as [`amr::OTP`]). Meant for
    /// step-up checks: a route that needs a second factor answers "authenticate again" when
    /// `!principal.has_amr(amr::OTP) && !principal.has_amr(amr::MFA)`. Compared exactly
    /// (the values are case-sensitive).
    pub fn has_amr(&self, method: &str) -> bool {
        self.amr.iter().any(|m| m == method)
    }

    /// When the caller's access token expires; `None` for a principal not built from a token
    /// (tests, jobs, an operator's command). A long-running task started for a request can
    /// check it before acting on the caller's behalf later.
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        self.expires_at
    }

    /// Whether the caller's role grants `permission`.
    pub fn can(&self, permission: Permission) -> bool {
        self.role.allows(permission)
    }

    /// Checks `permission`.
    ///
    /// # Errors
    /// [`Error::Forbidden`] when the caller's role does not grant it.
    pub fn require(&self, permission: Permission) -> Result<()> {
        if self.can(permission) {
            Ok(())
        } else {
            Err(Error::Forbidden)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_answers_forbidden_below_the_minimum_role() {
        let p = Principal::new(
            UserId::new(),
            TenantId::new(),
            Role::Member,
            ["projects:read".to_owned()],
            SessionId::new(),
        );
        assert!(p.require(Permission::WriteContent).is_ok());
        assert!(matches!(
            p.require(Permission::ManageMembers),
            Err(Error::Forbidden)
        ));
        assert!(p.has_scope("projects:read") && !p.has_scope("projects:write"));
    }

    #[test]
    fn amr_and_expiry_are_empty_until_set_and_compared_exactly() {
        let p = Principal::new(
            UserId::new(),
            TenantId::new(),
            Role::Member,
            [],
            SessionId::new(),
        );
        assert!(p.amr().is_empty() && p.expires_at().is_none());
        assert!(!p.has_amr(amr::PASSWORD));
        let at = OffsetDateTime::UNIX_EPOCH + time::Duration::hours(1);
        let p = p
            .with_amr(["pwd", "otp", "pwd", ""].map(str::to_owned))
            .with_expires_at(at);
        assert_eq!(p.amr(), ["pwd", "otp"]);
        assert!(p.has_amr(amr::PASSWORD) && p.has_amr(amr::OTP));
        assert!(!p.has_amr("PWD") && !p.has_amr(amr::MFA));
        assert_eq!(p.expires_at(), Some(at));
        // A role change from a trusted store keeps how the caller signed in.
        let p = p.with_role(Role::Admin);
        assert!(p.has_amr(amr::OTP) && p.expires_at() == Some(at));
    }
}
