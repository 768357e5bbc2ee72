//! Small validated value types shared by the repositories.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{Error, Result};

/// The optimistic-concurrency version of a record: 1 on creation, +1 on every update.
///
/// Sent as the `ETag` of a record and expected back in `If-Match`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, sqlx::Type,
)]
#[serde(transparent)]
#[sqlx(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Version(i64);

impl Version {
    /// The version of a newly created record.
    pub const INITIAL: Version = Version(1);

    /// Wraps a raw version number.
    pub const fn new(version: i64) -> Self {
        Version(version)
    }

    /// The version after this one: what an update moves a record to.
    pub const fn next(self) -> Version {
        Version(self.0 + 1)
    }

    /// The raw number.
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl From<Version> for i64 {
    fn from(version: Version) -> i64 {
        version.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A normalized email address: trimmed and lowercased, so uniqueness is case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Email(String);

impl Email {
    /// Checks and normalizes an address.
    ///
    /// # Errors
    /// `validation_failed` on `email` when it is not a plausible address.
    pub fn parse(input: &str) -> Result<Self> {
        let email = input.trim().to_lowercase();
        let plausible = email.len() <= 254
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && matches!(email.split_once('@'), Some((local, domain))
                if !local.is_empty() && local.len() <= 64
                    && domain.contains('.') && !domain.contains('@')
                    && !domain.starts_with('.') && !domain.ends_with('.'));
        if plausible {
            Ok(Email(email))
        } else {
            Err(Error::invalid("email", "is not a valid email address"))
        }
    }

    /// The normalized address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after `@`.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, domain)| domain)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Email::parse(&raw).map_err(|_| serde::de::Error::custom("invalid email address"))
    }
}

/// A tenant's URL-safe handle: 3 to 63 of `a-z`, `0-9` and inner `-`. Immutable once created.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Slug(String);

impl Slug {
    /// Checks a client-chosen slug.
    ///
    /// # Errors
    /// `validation_failed` on `tenant_slug` when it breaks the rules above.
    pub fn parse(input: &str) -> Result<Self> {
        let ok = (3..=63).contains(&input.len())
            && input
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !input.starts_with('-')
            && !input.ends_with('-');
        if ok {
            Ok(Slug(input.to_owned()))
        } else {
            Err(Error::invalid(
                "tenant_slug",
                "must be 3-63 characters of a-z, 0-9 and '-', not starting or ending with '-'",
            ))
        }
    }

    /// Derives a slug from a display name (`"Acme, Inc."` → `"acme-inc"`). A name with too
    /// few ASCII letters or digits (`"T"`, `"東京"`) still gets a valid slug: what it has,
    /// padded with a random suffix (`"t-3f9a2c"`, `"tenant-3f9a2c"`).
    pub fn from_name(name: &str) -> Self {
        let mut slug = String::with_capacity(name.len().min(64));
        for c in name.chars().flat_map(char::to_lowercase) {
            if slug.len() >= 63 {
                break;
            }
            if c.is_ascii_alphanumeric() {
                slug.push(c);
            } else if !slug.is_empty() && !slug.ends_with('-') {
                slug.push('-');
            }
        }
        let slug = slug.trim_end_matches('-');
        match Slug::parse(slug) {
            Ok(slug) => slug,
            Err(_) if slug.is_empty() => Slug::with_suffix("tenant"),
            Err(_) => Slug::with_suffix(slug),
        }
    }

    /// `base` (itself made of valid slug characters, at most 56 bytes kept) with a random
    /// six-character suffix: a fresh candidate when a derived slug is taken.
    pub(crate) fn with_suffix(base: &str) -> Self {
        let random = uuid::Uuid::now_v7().simple().to_string();
        let base: String = base.chars().take(56).collect();
        let base = base.trim_end_matches('-');
        Slug(format!("{base}-{}", &random[random.len() - 6..]))
    }

    /// The slug text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a billing plan (`free` until billing says otherwise): 1 to 64 of `a-z`, `0-9`,
/// `-` and `_`. Plans and their entitlements are defined by the billing configuration; this is
/// only the stored name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanName(String);

impl PlanName {
    /// The plan every tenant starts on, and returns to when a subscription ends.
    pub const FREE: &'static str = "free";

    /// The built-in free plan.
    pub fn free() -> Self {
        PlanName(Self::FREE.to_owned())
    }

    /// Checks a plan name.
    ///
    /// # Errors
    /// `validation_failed` on `plan` when it breaks the rules above.
    pub fn parse(input: &str) -> Result<Self> {
        let ok = (1..=64).contains(&input.len())
            && input
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(PlanName(input.to_owned()))
        } else {
            Err(Error::invalid(
                "plan",
                "must be 1-64 characters of a-z, 0-9, '-' and '_'",
            ))
        }
    }

    /// The plan's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the built-in free plan.
    pub fn is_free(&self) -> bool {
        self.0 == Self::FREE
    }
}

impl Default for PlanName {
    fn default() -> Self {
        Self::free()
    }
}

impl fmt::Display for PlanName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PlanName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        PlanName::parse(&raw).map_err(|_| serde::de::Error::custom("invalid plan name"))
    }
}

/// A password hash in PHC string format. Its `Debug` never shows the hash.
#[derive(Clone, PartialEq, Eq, sqlx::Type)]
#[sqlx(transparent)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Wraps a PHC string produced by a password hasher.
    pub fn new(phc: String) -> Self {
        Self(phc)
    }

    /// The PHC string, for verification.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

/// The current time at microsecond precision, the precision PostgreSQL stores, so a value
/// read back equals the value written on both backends.
pub fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .unwrap_or(now)
}

/// Checks a required, trimmed text field: no control characters, 1 to `max_chars`
/// characters. Problems are pushed to `errors` under `field`.
pub fn check_text(errors: &mut Vec<crate::FieldError>, field: &str, value: &str, max_chars: usize) {
    let len = value.trim().chars().count();
    // Control characters (NUL above all, which PostgreSQL cannot store) never belong in a
    // name or title.
    if value.chars().any(char::is_control) {
        errors.push(crate::FieldError::new(
            field,
            "must not contain control characters",
        ));
    } else if len == 0 {
        errors.push(crate::FieldError::new(field, "must not be empty"));
    } else if len > max_chars {
        errors.push(crate::FieldError::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
}

/// Checks an optional free-text field: line breaks and tabs allowed, no other control
/// characters, at most `max_chars` characters.
pub fn check_optional_text(
    errors: &mut Vec<crate::FieldError>,
    field: &str,
    value: Option<&str>,
    max_chars: usize,
) {
    // Free text may hold line breaks and tabs, but no other control characters.
    if value.is_some_and(|v| {
        v.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    }) {
        errors.push(crate::FieldError::new(
            field,
            "must not contain control characters",
        ));
    } else if value.is_some_and(|v| v.chars().count() > max_chars) {
        errors.push(crate::FieldError::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
}

/// Checks a required free-text field (a comment, a note's body): as
/// [`check_optional_text`], and not blank.
pub fn check_free_text(
    errors: &mut Vec<crate::FieldError>,
    field: &str,
    value: &str,
    max_chars: usize,
) {
    let before = errors.len();
    check_optional_text(errors, field, Some(value), max_chars);
    if errors.len() == before && value.trim().is_empty() {
        errors.push(crate::FieldError::new(field, "must not be empty"));
    }
}

/// [`check_free_text`] for a body with one such field: `Ok(())`, or the `validation_failed`
/// error naming it.
///
/// # Errors
/// [`Error::Validation`] when the text is blank or longer than `max_chars`.
pub fn free_text(field: &str, value: &str, max_chars: usize) -> Result<()> {
    let mut errors = Vec::new();
    check_free_text(&mut errors, field, value, max_chars);
    finish_validation(errors)
}

/// `Ok(())` when no field failed, else one `validation_failed` error with all of them.
///
/// # Errors
/// [`Error::Validation`] with every collected field error.
pub fn finish_validation(errors: Vec<crate::FieldError>) -> Result<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Validation(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_is_required_and_may_span_lines() {
        let check = |value: &str| {
            let mut errors = Vec::new();
            check_free_text(&mut errors, "body", value, 10);
            errors.into_iter().map(|e| e.message).collect::<Vec<_>>()
        };
        assert!(check("two\nlines").is_empty());
        assert_eq!(check(" \n\t"), ["must not be empty"]);
        assert_eq!(check("a\u{0}b"), ["must not contain control characters"]);
        assert_eq!(check("eleven char"), ["must be at most 10 characters"]);
    }

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").expect("valid").as_str(),
            "ada@example.com"
        );
        assert_eq!(Email::parse("a@b.io").expect("valid").domain(), "b.io");
        for bad in [
            "",
            "no-at",
            "@x.io",
            "a@",
            "a@nodot",
            "a b@x.io",
            "a@x.io.",
            &"a".repeat(300),
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slugs_are_checked_and_derived() {
        assert!(Slug::parse("acme-42").is_ok());
        for bad in [
            "ab",
            "-acme",
            "acme-",
            "Acme",
            "ac me",
            "acmé",
            &"a".repeat(64),
        ] {
            assert!(Slug::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Slug::from_name("Acme, Inc.").as_str(), "acme-inc");
        for short in ["T", "!!", "東京", "a-", &"é".repeat(300)] {
            let derived = Slug::from_name(short);
            assert!(
                Slug::parse(derived.as_str()).is_ok(),
                "{short:?} → {derived}"
            );
        }
        assert!(Slug::from_name("T").as_str().starts_with("t-"));
        assert!(Slug::from_name("東京").as_str().starts_with("tenant-"));
        let long = Slug::from_name(&"ab ".repeat(100));
        assert!(
            long.as_str().len() <= 63 && Slug::parse(long.as_str()).is_ok(),
            "{long}"
        );
    }

    #[test]
    fn plan_names_are_checked() {
        assert!(PlanName::free().is_free());
        assert_eq!(
            PlanName::parse("pro_2026").expect("valid").as_str(),
            "pro_2026"
        );
        for bad in ["", "Pro", "pro plan", "pro/1", &"p".repeat(65)] {
            assert!(PlanName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn now_has_microsecond_precision() {
        assert_eq!(now().nanosecond() % 1_000, 0);
    }
}
