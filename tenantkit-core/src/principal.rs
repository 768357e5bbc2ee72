//! The verified caller.

use std::collections::BTreeSet;

use crate::{Error, Permission, Result, Role, SessionId, TenantId, UserId};

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
        }
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
}
