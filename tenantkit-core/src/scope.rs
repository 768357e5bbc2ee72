//! Tenant scopes: which tenant a piece of work runs in, and whose view of it.

use crate::{Permission, Principal, TenantId, UserId};

/// How far inside its tenant a scope reaches: team-restricted rows are visible only to their
/// team's members and to callers allowed [`Permission::AccessAllTeams`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Every row of the tenant (admins, owners, the system).
    Everything,
    /// Unrestricted rows, and restricted rows of this user's teams.
    User(UserId),
}

/// The tenant a piece of work runs in, taken from a verified [`Principal`], and whose view of
/// it (team-restricted rows are hidden from callers outside their team; see
/// [`crate::Visibility`]).
///
/// There is deliberately no way to build one from request input: the tenant never comes
/// from a path or a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantScope {
    tenant_id: TenantId,
    reach: Reach,
}

impl TenantScope {
    /// The scope of the caller's tenant, as the caller may see it.
    pub fn of(principal: &Principal) -> Self {
        let reach = if principal.can(Permission::AccessAllTeams) {
            Reach::Everything
        } else {
            Reach::User(principal.user_id())
        };
        Self {
            tenant_id: principal.tenant_id(),
            reach,
        }
    }

    /// A scope for work the system does on its own behalf (a billing webhook, a CLI command,
    /// a background job), where no principal exists. It sees every row of the tenant.
    ///
    /// The `tenant_id` must come from a trusted source (a verified signature, the operator,
    /// a stored record), never from a client request.
    pub fn for_system(tenant_id: TenantId) -> Self {
        Self {
            tenant_id,
            reach: Reach::Everything,
        }
    }

    /// The tenant.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    /// Whether this scope sees team-restricted rows of teams its user is not in.
    pub fn sees_all_teams(&self) -> bool {
        self.reach == Reach::Everything
    }

    /// The user whose view this scope has, unless it sees everything.
    pub fn viewer(&self) -> Option<UserId> {
        match self.reach {
            Reach::Everything => None,
            Reach::User(user) => Some(user),
        }
    }
}

impl From<&Principal> for TenantScope {
    fn from(principal: &Principal) -> Self {
        TenantScope::of(principal)
    }
}
