//! Channels: logical names a client uses (`tenant`, `project:<id>`, kinds the app registers),
//! always mapped into the caller's own tenant, and the per-kind authorization hook.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tenantkit_core::{Principal, TenantId};

use crate::{Error, Result};

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_LEN: usize = 100;

/// A boxed future, as hooks return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A channel of one tenant: the tenant and the logical name. Two tenants' `tenant` channels
/// are different channels; a client only ever names channels of its own tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelKey {
    /// The tenant.
    pub tenant: TenantId,
    /// The logical name (`tenant`, `project:<id>` ...), validated.
    pub name: Arc<str>,
}

impl ChannelKey {
    /// The channel `name` of `tenant`, if `name` is a valid channel name (see
    /// [`ChannelName::parse`]).
    ///
    /// # Errors
    /// [`Error::InvalidChannel`].
    pub fn new(tenant: TenantId, name: &str) -> Result<Self> {
        ChannelName::parse(name)?;
        Ok(Self {
            tenant,
            name: Arc::from(name),
        })
    }
}

impl fmt::Display for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.name)
    }
}

/// A parsed channel name: `tenant`, or `<kind>:<id>` with a kind of lowercase letters, digits
/// and `_` (starting with a letter, at most 32 bytes) and an id of letters, digits, `-` and
/// `_` (at most 64 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelName<'a> {
    /// `tenant`, or the part before `:`.
    pub kind: &'a str,
    /// The part after `:` (`None` for `tenant`).
    pub id: Option<&'a str>,
}

impl<'a> ChannelName<'a> {
    /// Parses `name`.
    ///
    /// # Errors
    /// [`Error::InvalidChannel`] for anything else.
    pub fn parse(name: &'a str) -> Result<Self> {
        let invalid = || Error::InvalidChannel(truncate(name));
        if name == TENANT {
            return Ok(Self {
                kind: TENANT,
                id: None,
            });
        }
        if name.len() > MAX_CHANNEL_LEN {
            return Err(invalid());
        }
        let (kind, id) = name.split_once(':').ok_or_else(invalid)?;
        let kind_ok = (1..=32).contains(&kind.len())
            && kind.starts_with(|c: char| c.is_ascii_lowercase())
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        let id_ok = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !kind_ok || !id_ok || kind == TENANT {
            return Err(invalid());
        }
        Ok(Self { kind, id: Some(id) })
    }
}

/// The tenant-wide channel's name (and kind).
pub const TENANT: &str = "tenant";

fn truncate(name: &str) -> String {
    name.chars().take(40).collect()
}

/// Decides whether a caller may receive a kind's channel. Checked when a client subscribes
/// and again while it receives (at most every [`crate::Limits::recheck_every`], and at once
/// after an event marked as changing access), so a caller who loses access stops receiving.
///
/// Answer `Ok(false)` both for a channel that does not exist and for one the caller may not
/// see: the client gets `not_found` for both, so it cannot probe for hidden ids.
pub trait Authorize: Send + Sync + 'static {
    /// Whether `principal` may receive the channel `kind:id` of its tenant.
    fn authorize<'a>(
        &'a self,
        principal: &'a Principal,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool>>;
}

impl<F, Fut> Authorize for F
where
    F: Fn(Principal, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<bool>> + Send + 'static,
{
    fn authorize<'a>(
        &'a self,
        principal: &'a Principal,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self(principal.clone(), id.to_owned()))
    }
}

/// The channel kinds a server offers: `tenant` (every member of the tenant) and the kinds the
/// app registers, each with its [`Authorize`] hook. A name of an unregistered kind answers
/// `not_found`.
#[derive(Clone, Default)]
pub struct Channels {
    kinds: HashMap<String, Arc<dyn Authorize>>,
}

impl fmt::Debug for Channels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kinds: Vec<&str> = self.kinds.keys().map(String::as_str).collect();
        kinds.sort_unstable();
        f.debug_struct("Channels").field("kinds", &kinds).finish()
    }
}

impl Channels {
    /// Only the `tenant` channel.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the kind `kind` (lowercase letters, digits, `_`) with its authorization.
    ///
    /// # Panics
    /// When `kind` is `tenant` or not a valid kind: a programming error at start-up.
    #[must_use]
    pub fn kind(mut self, kind: &str, authorize: impl Authorize) -> Self {
        assert!(
            ChannelName::parse(&format!("{kind}:x")).is_ok(),
            "`{kind}` is not a channel kind (lowercase letters, digits and _, not `tenant`)"
        );
        self.kinds.insert(kind.to_owned(), Arc::new(authorize));
        self
    }

    /// Whether `principal` may receive the channel `name` of its own tenant. `tenant` is
    /// open to every member; other kinds ask their hook; unknown kinds are refused.
    ///
    /// # Errors
    /// [`Error::InvalidChannel`] for a malformed name; the hook's errors.
    pub async fn authorize(&self, principal: &Principal, name: &str) -> Result<bool> {
        let parsed = ChannelName::parse(name)?;
        match (parsed.kind, parsed.id) {
            (TENANT, None) => Ok(true),
            (kind, Some(id)) => match self.kinds.get(kind) {
                Some(hook) => hook.authorize(principal, id).await,
                None => Ok(false),
            },
            _ => Ok(false),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_strictly() {
        assert_eq!(ChannelName::parse("tenant").unwrap().id, None);
        let p = ChannelName::parse("project:0193a7f0-aaaa-7bbb-8ccc-000000000001").unwrap();
        assert_eq!(p.kind, "project");
        for bad in [
            "",
            "tenant:x",
            "Project:1",
            "project:",
            ":1",
            "project:a/b",
            "project:a:b",
            "1x:1",
            "project:ä",
            &format!("p:{}", "a".repeat(65)),
            &"x".repeat(500),
        ] {
            assert!(ChannelName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
