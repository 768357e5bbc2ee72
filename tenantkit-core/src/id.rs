//! Typed UUIDv7 identifiers.

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

/// Defines a typed UUIDv7 identifier: a newtype over [`uuid::Uuid`] with `Display`/`FromStr`
/// (hyphenated form only), serde (a string), sqlx encoding (a `uuid` on PostgreSQL, a 16-byte
/// `BLOB` on SQLite, whose byte order is creation order) and, with tenantkit-core's `openapi`
/// feature, an OpenAPI schema (`string`, `format: uuid`). The calling crate needs no other
/// dependency for it.
///
/// ```
/// tenantkit_core::define_id!(
///     /// Identifies a note.
///     NoteId, "note id"
/// );
///
/// let id = NoteId::new();
/// assert_eq!(id.to_string().parse::<NoteId>(), Ok(id));
/// assert!("not-an-id".parse::<NoteId>().is_err());
/// ```
#[macro_export]
macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        ///
        /// A UUIDv7: time-ordered, so keyset pagination over it follows creation order.
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name($crate::__private::Uuid);

        impl $name {
            /// A fresh, time-ordered identifier.
            pub fn new() -> Self {
                Self($crate::__private::Uuid::now_v7())
            }

            /// Wraps an existing UUID, e.g. one read from a trusted store.
            pub const fn from_uuid(uuid: $crate::__private::Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> $crate::__private::Uuid {
                self.0
            }
        }

        impl ::std::default::Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(&self.0.as_hyphenated(), f)
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0.as_hyphenated())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::ParseIdError;

            /// Parses the hyphenated form. Other forms (braced, URN, simple) are rejected so
            /// that one resource has exactly one spelling in URLs, logs and caches.
            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                $crate::__private::parse_id(s, $kind).map(Self)
            }
        }

        impl ::std::convert::From<$name> for $crate::__private::Uuid {
            fn from(id: $name) -> $crate::__private::Uuid {
                id.0
            }
        }

        impl $crate::__private::serde::Serialize for $name {
            fn serialize<S: $crate::__private::serde::Serializer>(
                &self,
                serializer: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                $crate::__private::serde::Serialize::serialize(&self.0, serializer)
            }
        }

        impl<'de> $crate::__private::serde::Deserialize<'de> for $name {
            /// Only the hyphenated form, as `FromStr`: one spelling per resource everywhere.
            fn deserialize<D: $crate::__private::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> ::std::result::Result<Self, D::Error> {
                $crate::__private::deserialize_id(deserializer, $kind).map(Self)
            }
        }

        impl<DB: $crate::__private::sqlx::Database> $crate::__private::sqlx::Type<DB> for $name
        where
            $crate::__private::Uuid: $crate::__private::sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <$crate::__private::Uuid as $crate::__private::sqlx::Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <$crate::__private::Uuid as $crate::__private::sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: $crate::__private::sqlx::Database> $crate::__private::sqlx::Encode<'q, DB>
            for $name
        where
            $crate::__private::Uuid: $crate::__private::sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as $crate::__private::sqlx::Database>::ArgumentBuffer<'q>,
            ) -> ::std::result::Result<
                $crate::__private::sqlx::encode::IsNull,
                $crate::__private::sqlx::error::BoxDynError,
            > {
                <$crate::__private::Uuid as $crate::__private::sqlx::Encode<'q, DB>>::encode_by_ref(
                    &self.0, buf,
                )
            }
        }

        impl<'r, DB: $crate::__private::sqlx::Database> $crate::__private::sqlx::Decode<'r, DB>
            for $name
        where
            $crate::__private::Uuid: $crate::__private::sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as $crate::__private::sqlx::Database>::ValueRef<'r>,
            ) -> ::std::result::Result<Self, $crate::__private::sqlx::error::BoxDynError> {
                <$crate::__private::Uuid as $crate::__private::sqlx::Decode<'r, DB>>::decode(value)
                    .map(Self)
            }
        }

        $crate::__tk_id_schema!($name);
    };
}

#[cfg(feature = "openapi")]
#[doc(hidden)]
#[macro_export]
macro_rules! __tk_id_schema {
    ($name:ident) => {
        impl $crate::__private::utoipa::PartialSchema for $name {
            fn schema() -> $crate::__private::utoipa::openapi::RefOr<
                $crate::__private::utoipa::openapi::schema::Schema,
            > {
                $crate::__private::uuid_schema()
            }
        }

        impl $crate::__private::utoipa::ToSchema for $name {}
    };
}

#[cfg(not(feature = "openapi"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __tk_id_schema {
    ($name:ident) => {};
}

/// Parses the hyphenated form of a UUID for an id of `kind` (for [`define_id!`]).
#[doc(hidden)]
pub fn parse_id(s: &str, kind: &'static str) -> Result<Uuid, ParseIdError> {
    let invalid = || ParseIdError {
        kind,
        input: truncate(s),
    };
    if s.len() != 36 {
        return Err(invalid());
    }
    Uuid::try_parse(s).map_err(|_| invalid())
}

/// Deserializes an id from its hyphenated text (for [`define_id!`]).
#[doc(hidden)]
pub fn deserialize_id<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
    kind: &'static str,
) -> Result<Uuid, D::Error> {
    struct Visitor(&'static str);
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Uuid;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a {} (a hyphenated UUID)", self.0)
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Uuid, E> {
            parse_id(text, self.0).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(Visitor(kind))
}

/// The OpenAPI schema of every id: a UUID string.
#[cfg(feature = "openapi")]
#[doc(hidden)]
pub fn uuid_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
        .into()
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
    /// Identifies an invitation to join a tenant.
    InvitationId, "invitation id"
);
define_id!(
    /// Identifies an entry of a tenant's audit log.
    AuditEntryId, "audit entry id"
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
        let a = TeamId::new();
        let b = TeamId::new();
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
    fn ids_deserialize_only_from_their_hyphenated_form() {
        let id = UserId::new();
        let json = format!("\"{id}\"");
        assert_eq!(
            serde_json::from_str::<UserId>(&json).expect("hyphenated"),
            id
        );
        for other in [
            format!("\"{}\"", id.as_uuid().simple()),
            format!("\"{}\"", id.as_uuid().urn()),
            format!("\"{{{id}}}\""),
            "42".to_owned(),
        ] {
            assert!(serde_json::from_str::<UserId>(&other).is_err(), "{other}");
        }
    }

    #[test]
    fn debug_names_the_kind_of_id() {
        let id = TeamId::from_uuid(Uuid::nil());
        assert_eq!(
            format!("{id:?}"),
            "TeamId(00000000-0000-0000-0000-000000000000)"
        );
    }
}
