//! Roles of a membership and the permissions they grant.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The role a user holds in one tenant. Ordered: `Owner > Admin > Member > Viewer`.
///
/// Handlers should not compare roles; they ask [`Role::allows`] for a [`Permission`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    /// Read-only access to the tenant's data.
    Viewer,
    /// Viewer, plus writing the tenant's content (records, files).
    Member,
    /// Member, plus managing members, invitations and teams, reading the audit log and billing.
    Admin,
    /// Admin, plus billing changes, deleting the tenant and transferring ownership.
    Owner,
}

/// Something a caller may be allowed to do inside its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Permission {
    /// Read the tenant, its members, teams and content.
    Read,
    /// Create, change and delete the tenant's content (records, files).
    WriteContent,
    /// Change roles, remove members, manage invitations and teams.
    ManageMembers,
    /// See and (with [`Permission::WriteContent`]) change every record of the tenant,
    /// including team-restricted records of teams the caller is not in (see
    /// [`crate::Visibility::Team`]).
    AccessAllTeams,
    /// Read the audit log.
    ReadAuditLog,
    /// Read the subscription and plan.
    ReadBilling,
    /// Change the tenant's settings (its name).
    ManageTenant,
    /// Change the subscription.
    ManageBilling,
    /// Delete the tenant.
    DeleteTenant,
    /// Make another member the owner.
    TransferOwnership,
}

impl Permission {
    /// Every permission, for exhaustive tests and documentation.
    pub const ALL: [Permission; 10] = [
        Permission::Read,
        Permission::WriteContent,
        Permission::ManageMembers,
        Permission::AccessAllTeams,
        Permission::ReadAuditLog,
        Permission::ReadBilling,
        Permission::ManageTenant,
        Permission::ManageBilling,
        Permission::DeleteTenant,
        Permission::TransferOwnership,
    ];

    /// The least role that holds this permission: the one place roles map to permissions.
    pub const fn minimum_role(self) -> Role {
        match self {
            Permission::Read => Role::Viewer,
            Permission::WriteContent => Role::Member,
            Permission::ManageMembers
            | Permission::AccessAllTeams
            | Permission::ReadAuditLog
            | Permission::ReadBilling
            | Permission::ManageTenant => Role::Admin,
            Permission::ManageBilling
            | Permission::DeleteTenant
            | Permission::TransferOwnership => Role::Owner,
        }
    }
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Member, Role::Admin, Role::Owner];

    /// Whether this role grants `permission`.
    pub fn allows(self, permission: Permission) -> bool {
        self >= permission.minimum_role()
    }

    /// The stable lowercase name used in tokens, JSON and the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error returned when text names no role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role; expected one of owner, admin, member, viewer")]
pub struct ParseRoleError;

impl FromStr for Role {
    type Err = ParseRoleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or(ParseRoleError)
    }
}

impl TryFrom<String> for Role {
    type Error = ParseRoleError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_owner_admin_member_viewer() {
        assert!(
            Role::Owner > Role::Admin && Role::Admin > Role::Member && Role::Member > Role::Viewer
        );
    }

    #[test]
    fn permission_matrix_matches_the_design() {
        use Permission::*;
        let expect = |role: Role, allowed: &[Permission]| {
            for p in Permission::ALL {
                assert_eq!(role.allows(p), allowed.contains(&p), "{role} / {p:?}");
            }
        };
        expect(Role::Viewer, &[Read]);
        expect(Role::Member, &[Read, WriteContent]);
        expect(
            Role::Admin,
            &[
                Read,
                WriteContent,
                ManageMembers,
                AccessAllTeams,
                ReadAuditLog,
                ReadBilling,
                ManageTenant,
            ],
        );
        expect(Role::Owner, &Permission::ALL);
    }

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(
                serde_json::to_string(&role).expect("json"),
                format!("\"{role}\"")
            );
        }
        assert_eq!("Owner".parse::<Role>(), Err(ParseRoleError));
        assert_eq!("superuser".parse::<Role>(), Err(ParseRoleError));
    }
}
