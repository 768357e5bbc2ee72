//! Typed UUIDv7 identifiers.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// The error returned when text is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a valid {kind}")]
pub struct ParseIdError {
    kind: &'static str,
    input: String,
}

impl ParseIdError {
    /// The kind of identifier that was expected, e.g. `"tenant id"`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        ///
        /// A UUIDv7: time-ordered, so keyset pagination over it follows creation order.
        #[derive(
            Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash,
            serde::Serialize, serde::Deserialize, sqlx::Type,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered identifier.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID, e.g. one read from a trusted store.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.as_hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0.as_hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            /// Parses the hyphenated form. Other forms (braced, URN, simple) are rejected so
            /// that one resource has exactly one spelling in URLs, logs and caches.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let invalid = || ParseIdError { kind: $kind, input: truncate(s) };
                if s.len() != 36 {
                    return Err(invalid());
                }
                Uuid::try_parse(s).map(Self).map_err(|_| invalid())
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }
    };
}

/// Keeps error messages (which may be echoed to clients) bounded for huge inputs.
fn truncate(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

define_id!(
    /// Identifies a tenant (an organisation, the unit of isolation).
    TenantId, "tenant id"
);
define_id!(
    /// Identifies a user account, which may be a member of several tenants.
    UserId, "user id"
);
define_id!(
    /// Identifies a login session (a refresh-token family).
    SessionId, "session id"
);
define_id!(
    /// Identifies a project, a tenant-owned record.
    ProjectId, "project id"
);
define_id!(
    /// Identifies a task inside a project, a tenant-owned record.
    TaskId, "task id"
);
define_id!(
    /// Identifies a team, a group of members inside a tenant.
    TeamId, "team id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text_and_json() {
        let id = TenantId::new();
        assert_eq!(id.to_string().parse::<TenantId>(), Ok(id));
        let json = serde_json::to_string(&id).expect("serialize");
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(
            serde_json::from_str::<TenantId>(&json).expect("deserialize"),
            id
        );
    }

    #[test]
    fn new_ids_are_version_7_and_ordered() {
        let a = ProjectId::new();
        let b = ProjectId::new();
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert!(
            a < b,
            "UUIDv7 ids created in sequence sort in creation order"
        );
    }

    #[test]
    fn malformed_ids_are_rejected_with_a_bounded_message() {
        for bad in [
            "",
            "42",
            "not-a-uuid",
            "{00000000-0000-0000-0000-000000000000}",
            "00000000000000000000000000000000",
            "../../etc/passwd",
        ] {
            let err = bad.parse::<UserId>().expect_err(bad);
            assert_eq!(err.kind(), "user id");
        }
        let huge = "x".repeat(10_000);
        let err = huge.parse::<UserId>().expect_err("huge");
        assert!(err.to_string().len() < 120);
    }

    #[test]
    fn debug_names_the_kind_of_id() {
        let id = TaskId::from_uuid(Uuid::nil());
        assert_eq!(
            format!("{id:?}"),
            "TaskId(00000000-0000-0000-0000-000000000000)"
        );
    }
}
