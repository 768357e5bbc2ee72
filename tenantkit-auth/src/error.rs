//! The crate's error type and its one mapping to HTTP problems.

use tenantkit_core::{ErrorCode, FieldError, Problem};

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in tenantkit-auth.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request carried no bearer token (or not in the `Authorization: Bearer` form).
    #[error("no bearer token")]
    MissingToken,
    /// The token is malformed, forged, signed by an unknown or retired key, for another
    /// issuer or audience, or not valid yet. The reason is for logs only.
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
    /// The token was valid but its `exp` has passed.
    #[error("token expired")]
    TokenExpired,
    /// A refresh token that had already been rotated was presented again after the grace
    /// window: it was copied. Its whole session has been revoked.
    #[error("refresh token reused; session revoked")]
    RefreshTokenReused {
        /// The revoked session.
        session: tenantkit_core::SessionId,
        /// Its user.
        user: tenantkit_core::UserId,
        /// Its tenant.
        tenant: tenantkit_core::TenantId,
    },
    /// The user's credentials changed (a password change or reset, "log out everywhere")
    /// while an operation that creates a session was in flight: the session was not created.
    #[error("credentials changed")]
    CredentialsChanged,
    /// Email or password is wrong, or the account cannot log in to the requested tenant.
    /// Deliberately one error for all of these, so responses do not reveal which accounts exist.
    #[error("invalid credentials")]
    InvalidCredentials,

    /// A second-factor code or recovery code that is wrong, expired or already used.
    #[error("invalid second-factor code")]
    InvalidCode,

    /// The caller's session did not sign in with a method the action requires (a second
    /// factor): sign in again with it.
    #[error("the session did not sign in with {0}")]
    InsufficientAuthentication(&'static str),
    /// The caller lacks the permission or scope the route needs.
    #[error("forbidden")]
    Forbidden,
    /// The operation acts for an existing account, which must sign in first (accepting an
    /// invitation sent to an address that has an account).
    #[error("login required")]
    LoginRequired,
    /// The password was right but the account's address is unproven, and this deployment
    /// signs in only proven addresses ([`crate::flows::SignupMode::VerifyFirst`]). A new link
    /// has been mailed.
    #[error("email address not verified")]
    EmailUnverified,
    /// A new password breaks the policy (too short, too long, too common).
    #[error("password rejected by policy")]
    WeakPassword(Vec<FieldError>),
    /// A key could not be loaded or generated (bad PEM, wrong type, too-short secret).
    #[error("key error: {0}")]
    Key(String),
    /// Password hashing failed or its worker pool is gone.
    #[error("password hashing failed: {0}")]
    Hashing(String),
    /// Too many attempts from this client or for this account; try again after `retry_after`.
    #[error("rate limited")]
    RateLimited {
        /// How long until the next attempt is allowed.
        retry_after: std::time::Duration,
    },
    /// The rate limits could not be consulted (a shared store behind [`crate::AuthLimits`] is
    /// unreachable or timed out): the attempt is refused, never let through unlimited (503
    /// `service_unavailable`). The reason is for logs only.
    #[error("rate limits unavailable: {0}")]
    LimitsUnavailable(String),
    /// The password hasher's queue is full: the request is refused at once rather than made
    /// to wait behind a burst (503 `service_unavailable` + `Retry-After`).
    #[error("password hashing overloaded")]
    Overloaded {
        /// When to try again.
        retry_after: std::time::Duration,
    },
    /// An email could not be sent.
    #[error("mail delivery failed: {0}")]
    Mail(String),
    /// A single sign-on login failed: an unknown, used, expired or another browser's state,
    /// the provider's refusal, a failed code exchange, an ID token that does not verify. The
    /// reason is for logs and the audit log only (401 `sso_failed`).
    #[error("single sign-on failed: {0}")]
    Sso(&'static str),
    /// The tenant signs its members in through its identity provider only (its "SSO
    /// required" policy): a password sign-in is refused (403 `sso_required`).
    #[error("the tenant requires single sign-on")]
    SsoRequired,
    /// A storage error from tenantkit-core.
    #[error(transparent)]
    Core(#[from] tenantkit_core::Error),
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        Error::Core(err.into())
    }
}

impl Error {
    /// The RFC 6750 `WWW-Authenticate` challenge for a 401, if this error is one.
    pub fn challenge(&self) -> Option<&'static str> {
        match self {
            Error::MissingToken | Error::LoginRequired => Some(r#"Bearer realm="tenantkit""#),
            Error::InvalidToken(_) => Some(
                r#"Bearer realm="tenantkit", error="invalid_token", error_description="The access token is invalid""#,
            ),
            Error::TokenExpired => Some(
                r#"Bearer realm="tenantkit", error="invalid_token", error_description="The access token expired""#,
            ),
            // RFC 9470's step-up challenge.
            Error::InsufficientAuthentication(_) => Some(
                r#"Bearer realm="tenantkit", error="insufficient_user_authentication", error_description="A second factor is required""#,
            ),
            _ => None,
        }
    }
}

/// The answer to a sign-in that stopped at the second factor ([`crate::flows::SignIn`]'s
/// `MfaRequired`): `401 mfa_required` with the `mfa_token` that continues it at
/// `POST /v1/auth/mfa/verify`. For handlers of one's own; send it with `Cache-Control:
/// no-store`.
pub fn mfa_required_problem(mfa_token: String) -> Problem {
    Problem::new(
        ErrorCode::MfaRequired,
        "The password is right; give a code from the authenticator (or a recovery code) with this `mfa_token` at /v1/auth/mfa/verify.",
    )
    .with_mfa_token(mfa_token)
}

/// The answer to a sign-in into a tenant that requires a second factor the account does not
/// have ([`crate::flows::SignIn`]'s `MfaEnrollmentRequired`): `403 mfa_enrollment_required`
/// with the `mfa_token` that can only enroll one (`POST /v1/auth/mfa/enroll`, then
/// `/v1/auth/mfa/enroll/confirm`, which signs in). Send it with `Cache-Control: no-store`.
pub fn mfa_enrollment_required_problem(mfa_token: String) -> Problem {
    Problem::new(
        ErrorCode::MfaEnrollmentRequired,
        "The password is right, but this tenant requires a second factor: enroll an authenticator with this `mfa_token` at /v1/auth/mfa/enroll, then confirm a first code at /v1/auth/mfa/enroll/confirm.",
    )
    .with_mfa_token(mfa_token)
}

impl From<&Error> for Problem {
    /// The one mapping of auth errors to HTTP. Token failures never say more than "invalid"
    /// or "expired": which check failed is logged, not answered.
    fn from(err: &Error) -> Self {
        let mut problem = problem_body(err);
        if let Some(challenge) = err.challenge() {
            problem = problem.with_header(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static(challenge),
            );
        }
        if let Error::RateLimited { retry_after } | Error::Overloaded { retry_after } = err {
            // Whole seconds, rounded up, at least 1 (RFC 9110 §10.2.3).
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            problem = problem.with_header(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(seconds.max(1)),
            );
        }
        problem
    }
}

fn problem_body(err: &Error) -> Problem {
    match err {
        Error::MissingToken => Problem::new(
            ErrorCode::Unauthenticated,
            "This endpoint requires a bearer access token.",
        ),
        Error::InvalidToken(reason) => {
            tracing::debug!(reason, "rejected access token");
            Problem::new(
                ErrorCode::InvalidToken,
                "The token is invalid, expired or revoked.",
            )
        }
        Error::TokenExpired => {
            Problem::new(ErrorCode::TokenExpired, "The access token has expired.")
        }
        Error::InvalidCredentials => Problem::new(
            ErrorCode::InvalidCredentials,
            "The email or password is incorrect.",
        ),
        Error::SsoRequired => Problem::new(
            ErrorCode::SsoRequired,
            "This tenant signs its members in through its identity provider: sign in at /v1/sso/{tenant}/login (POST /v1/sso/discover finds it by email).",
        ),
        Error::Sso(_) => Problem::new(
            ErrorCode::SsoFailed,
            "The single sign-on did not complete; start it again from the login page.",
        ),
        Error::InvalidCode => Problem::new(
            ErrorCode::InvalidCredentials,
            "The code is incorrect, expired or already used.",
        ),
        Error::InsufficientAuthentication(_) => Problem::new(
            ErrorCode::InsufficientUserAuthentication,
            "This action needs a session signed in with a second factor; sign in again with it.",
        ),
        Error::CredentialsChanged => Problem::new(
            ErrorCode::InvalidToken,
            "The account's credentials changed meanwhile; sign in again.",
        ),
        Error::RefreshTokenReused { .. } => Problem::new(
            ErrorCode::RefreshTokenReused,
            "This refresh token was already used; the session has been revoked. Log in again.",
        ),
        Error::Forbidden => Problem::new(
            ErrorCode::Forbidden,
            "Your role or token does not allow this action.",
        ),
        Error::LoginRequired => Problem::new(
            ErrorCode::Unauthenticated,
            "This address has an account; log in and try again with its access token.",
        ),
        Error::EmailUnverified => Problem::new(
            ErrorCode::EmailUnverified,
            "Confirm your email address first: a link has been sent to it.",
        ),
        Error::WeakPassword(errors) => Problem::new(
            ErrorCode::ValidationFailed,
            "Some fields are invalid; see `errors`.",
        )
        .with_errors(errors.clone()),
        Error::RateLimited { .. } => Problem::new(
            ErrorCode::RateLimited,
            "Too many attempts; retry after the time in `Retry-After`.",
        ),
        Error::Overloaded { .. } => {
            tracing::warn!("password hashing queue full; request refused");
            Problem::new(
                ErrorCode::ServiceUnavailable,
                "The server is busy; retry after the time in `Retry-After`.",
            )
        }
        Error::LimitsUnavailable(reason) => {
            tracing::error!(reason = %reason, "rate limits unavailable; attempt refused");
            Problem::new(
                ErrorCode::ServiceUnavailable,
                "The service cannot check its rate limits right now; retry shortly.",
            )
        }
        Error::Core(core) => Problem::from(core),
        Error::Key(_) | Error::Hashing(_) | Error::Mail(_) => {
            tracing::error!(error = %err, "auth internal error");
            Problem::internal()
        }
    }
}

impl From<Error> for Problem {
    fn from(err: Error) -> Self {
        Problem::from(&err)
    }
}

/// The problem response for `err`, with its `WWW-Authenticate` challenge when it is a 401.
pub fn problem_response<B: From<bytes::Bytes>>(err: &Error) -> http::Response<B> {
    let mut response = Problem::from(err).into_response::<B>();
    if let Some(challenge) = err.challenge() {
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static(challenge),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overloaded_hasher_answers_503_with_retry_after() {
        let err = Error::Overloaded {
            retry_after: std::time::Duration::from_millis(1500),
        };
        let response: http::Response<bytes::Bytes> = problem_response(&err);
        assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "2");
        let body: serde_json::Value = serde_json::from_slice(response.body()).expect("json");
        assert_eq!(body["code"], "service_unavailable");
    }
}
