//! The records of login sessions, shared by every session store.

use serde::Serialize;
use time::OffsetDateTime;

use tenantkit_core::{SessionId, TenantId, UserId};

/// A login session: one refresh-token family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct SessionRecord {
    /// The session id (the `sid` of its access tokens).
    pub id: SessionId,
    /// Who logged in.
    pub user_id: UserId,
    /// The tenant the session acts in.
    pub tenant_id: TenantId,
    /// When it began.
    pub created_at: OffsetDateTime,
    /// When a refresh last used it (idle expiry counts from here).
    pub last_used_at: OffsetDateTime,
    /// When it ends regardless of use (absolute expiry).
    pub expires_at: OffsetDateTime,
    /// When it was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
    /// Its user's credentials epoch when it was created: a session is only made while this is
    /// still the user's epoch, and stops refreshing once the epoch moves on.
    pub credentials_epoch: i64,
    /// How its sign-in authenticated; every access token of the session carries these.
    #[sqlx(try_from = "String")]
    pub amr: AuthMethods,
}

impl SessionRecord {
    /// A live session of `user` in `tenant`, begun and last used at `at`, ending at
    /// `expires_at` whatever its use.
    pub fn new(
        user_id: UserId,
        tenant_id: TenantId,
        at: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Self {
        Self {
            id: SessionId::new(),
            user_id,
            tenant_id,
            created_at: at,
            last_used_at: at,
            expires_at,
            revoked_at: None,
            credentials_epoch: 0,
            amr: AuthMethods::default(),
        }
    }

    /// The same session, signed in with `amr`.
    pub fn with_amr(mut self, amr: AuthMethods) -> Self {
        self.amr = amr;
        self
    }

    /// The same session, made under the user's credentials epoch `epoch`.
    pub fn with_credentials_epoch(mut self, epoch: i64) -> Self {
        self.credentials_epoch = epoch;
        self
    }
}

/// One refresh token of a session, known only by its hash.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RefreshTokenRecord {
    /// The session it belongs to.
    pub session_id: SessionId,
    /// 1 for the token issued at login, +1 per rotation.
    pub generation: i64,
    /// When it was issued.
    pub created_at: OffsetDateTime,
    /// When it was exchanged for its successor, if it was.
    pub rotated_at: Option<OffsetDateTime>,
}

/// How a sign-in authenticated: RFC 8176 `amr` values (see [`tenantkit_core::amr`]), kept
/// with the session and copied into each of its access tokens. No duplicates, no empty
/// values, no whitespace inside a value (a value given with whitespace counts as several:
/// sessions store them space-separated).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct AuthMethods(Vec<String>);

impl AuthMethods {
    /// The methods `methods`, in order, without duplicates.
    pub fn new<I>(methods: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut out: Vec<String> = Vec::new();
        for method in methods {
            for value in method.as_ref().split_whitespace() {
                if !out.iter().any(|m| m == value) {
                    out.push(value.to_owned());
                }
            }
        }
        Self(out)
    }

    /// A password sign-in: `["pwd"]`.
    pub fn password() -> Self {
        Self::new([tenantkit_core::amr::PASSWORD])
    }

    /// The values.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// Whether `method` is among them (compared exactly).
    pub fn contains(&self, method: &str) -> bool {
        self.0.iter().any(|m| m == method)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The methods a session derived in another tenant keeps (a tenant switch, an accepted
    /// invitation): the account's own (`pwd`, `otp`, ...), not what one tenant's identity
    /// provider vouched for ([`tenantkit_core::amr::SSO`], [`tenantkit_core::amr::SSO_MFA`]),
    /// which only that tenant trusts.
    #[must_use]
    pub fn in_another_tenant(&self) -> Self {
        use tenantkit_core::amr::{SSO, SSO_MFA};
        Self(
            self.0
                .iter()
                .filter(|m| *m != SSO && *m != SSO_MFA)
                .cloned()
                .collect(),
        )
    }

    /// The values, space-separated, as the session stores keep them.
    pub fn to_column(&self) -> String {
        self.0.join(" ")
    }
}

impl From<String> for AuthMethods {
    /// From the stored, space-separated form.
    fn from(column: String) -> Self {
        Self::new(column.split_whitespace())
    }
}

impl From<AuthMethods> for Vec<String> {
    fn from(methods: AuthMethods) -> Self {
        methods.0
    }
}

#[cfg(test)]
mod tests {
    use super::AuthMethods;

    #[test]
    fn another_tenant_keeps_the_accounts_methods_only() {
        let methods = AuthMethods::new(["pwd", "otp", "sso", "sso_mfa"]);
        assert_eq!(methods.in_another_tenant().as_slice(), ["pwd", "otp"]);
        let provider_only = AuthMethods::new(["sso", "sso_mfa"]);
        assert!(provider_only.in_another_tenant().is_empty());
    }
}
