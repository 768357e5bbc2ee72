//! RFC 9457 problem details: the one place errors become HTTP answers.

use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};

use crate::{Error, FieldError};

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A stable, machine-readable error code. Clients switch on this, never on `title` or `detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ErrorCode {
    /// 400: the request is malformed (e.g. invalid JSON).
    BadRequest,
    /// 400: a signed request (a webhook) carries no valid signature.
    InvalidSignature,
    /// 401: no credentials were presented.
    Unauthenticated,
    /// 401: the presented token is invalid.
    InvalidToken,
    /// 401: the presented token has expired.
    TokenExpired,
    /// 401: email or password is wrong.
    InvalidCredentials,
    /// 401: a rotated refresh token was presented again; its session was revoked.
    RefreshTokenReused,
    /// 401: the password was right and a second factor is due: the problem's `mfa_token`
    /// continues the sign-in at `POST /v1/auth/mfa/verify`.
    MfaRequired,
    /// 401: the caller's session did not sign in with a method this action requires (a
    /// second factor): sign in again with it (RFC 9470 `insufficient_user_authentication`).
    InsufficientUserAuthentication,
    /// 401: a single sign-on login did not complete (its state, the provider's answer or
    /// its ID token did not check out): start it again.
    SsoFailed,
    /// 403: the tenant signs its members in through its identity provider only: a password
    /// sign-in is refused.
    SsoRequired,
    /// 403: authenticated but not allowed.
    Forbidden,
    /// 403: the password was right, but the tenant requires a second factor the account does
    /// not have: the problem's `mfa_token` can only enroll one (`POST /v1/auth/mfa/enroll`).
    MfaEnrollmentRequired,
    /// 403: the password was right, but the account's email address is not proven yet (in an
    /// enumeration-safe signup mode, where signing in waits for it).
    EmailUnverified,
    /// 403: the tenant's plan does not allow more (storage bytes, seats).
    QuotaExceeded,
    /// 404: no such resource in the caller's tenant.
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 408: the request took longer than the server allows.
    RequestTimeout,
    /// 409: the change conflicts with existing state.
    Conflict,
    /// 409: an upload is completed before its bytes reached the store.
    UploadIncomplete,
    /// 409: the stored object is not what the upload declared (size, sha256, type); it was
    /// deleted.
    UploadMismatch,
    /// 412: `If-Match` does not match the current version.
    PreconditionFailed,
    /// 413: the body is larger than allowed.
    PayloadTooLarge,
    /// 415: the body's media type is not accepted.
    UnsupportedMediaType,
    /// 422: some fields are invalid; see `errors`.
    ValidationFailed,
    /// 429: too many requests; see `Retry-After`.
    RateLimited,
    /// 500: the server failed; details are only in the server log.
    InternalError,
    /// 503: a dependency (such as the database) is unavailable.
    ServiceUnavailable,
}

impl ErrorCode {
    /// The HTTP status this code is always sent with.
    pub const fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidSignature => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthenticated
            | ErrorCode::InvalidToken
            | ErrorCode::TokenExpired
            | ErrorCode::InvalidCredentials
            | ErrorCode::RefreshTokenReused
            | ErrorCode::MfaRequired
            | ErrorCode::SsoFailed
            | ErrorCode::InsufficientUserAuthentication => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden
            | ErrorCode::EmailUnverified
            | ErrorCode::QuotaExceeded
            | ErrorCode::MfaEnrollmentRequired
            | ErrorCode::SsoRequired => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::Conflict | ErrorCode::UploadIncomplete | ErrorCode::UploadMismatch => {
                StatusCode::CONFLICT
            }
            ErrorCode::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::ValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable snake_case spelling sent as `code`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidSignature => "invalid_signature",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::UploadIncomplete => "upload_incomplete",
            ErrorCode::UploadMismatch => "upload_mismatch",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::RefreshTokenReused => "refresh_token_reused",
            ErrorCode::MfaRequired => "mfa_required",
            ErrorCode::InsufficientUserAuthentication => "insufficient_user_authentication",
            ErrorCode::SsoFailed => "sso_failed",
            ErrorCode::SsoRequired => "sso_required",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::MfaEnrollmentRequired => "mfa_enrollment_required",
            ErrorCode::EmailUnverified => "email_unverified",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PreconditionFailed => "precondition_failed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::ValidationFailed => "validation_failed",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::ServiceUnavailable => "service_unavailable",
        }
    }

    /// A short, fixed, human-readable summary (RFC 9457 `title`).
    pub const fn title(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "Malformed request",
            ErrorCode::InvalidSignature => "Invalid signature",
            ErrorCode::QuotaExceeded => "Quota exceeded",
            ErrorCode::UploadIncomplete => "Upload incomplete",
            ErrorCode::UploadMismatch => "Upload mismatch",
            ErrorCode::Unauthenticated => "Authentication required",
            ErrorCode::InvalidToken => "Invalid token",
            ErrorCode::TokenExpired => "Token expired",
            ErrorCode::InvalidCredentials => "Invalid credentials",
            ErrorCode::RefreshTokenReused => "Refresh token reused",
            ErrorCode::MfaRequired => "Second factor required",
            ErrorCode::InsufficientUserAuthentication => "Stronger sign-in required",
            ErrorCode::SsoFailed => "Single sign-on failed",
            ErrorCode::SsoRequired => "Single sign-on required",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::MfaEnrollmentRequired => "Second factor enrollment required",
            ErrorCode::EmailUnverified => "Email address not verified",
            ErrorCode::NotFound => "Not found",
            ErrorCode::MethodNotAllowed => "Method not allowed",
            ErrorCode::RequestTimeout => "Request timeout",
            ErrorCode::Conflict => "Conflict",
            ErrorCode::PreconditionFailed => "Precondition failed",
            ErrorCode::PayloadTooLarge => "Payload too large",
            ErrorCode::UnsupportedMediaType => "Unsupported media type",
            ErrorCode::ValidationFailed => "Validation failed",
            ErrorCode::RateLimited => "Too many requests",
            ErrorCode::InternalError => "Internal server error",
            ErrorCode::ServiceUnavailable => "Service unavailable",
        }
    }
}

impl ErrorCode {
    /// The code for an error status produced without one (by a framework, a timeout or a
    /// body-limit layer), so every error answer can be a problem. `None` for other statuses.
    pub fn from_status(status: StatusCode) -> Option<ErrorCode> {
        Some(match status {
            StatusCode::BAD_REQUEST => ErrorCode::BadRequest,
            StatusCode::UNAUTHORIZED => ErrorCode::Unauthenticated,
            StatusCode::FORBIDDEN => ErrorCode::Forbidden,
            StatusCode::NOT_FOUND => ErrorCode::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
            StatusCode::REQUEST_TIMEOUT => ErrorCode::RequestTimeout,
            StatusCode::CONFLICT => ErrorCode::Conflict,
            StatusCode::PRECONDITION_FAILED => ErrorCode::PreconditionFailed,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
            StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::ValidationFailed,
            StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
                ErrorCode::ServiceUnavailable
            }
            status if status.is_server_error() => ErrorCode::InternalError,
            _ => return None,
        })
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An RFC 9457 problem details body: `{type, title, status, detail, code, errors?}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// A URI naming the kind of problem; one per [`ErrorCode`].
    #[serde(rename = "type")]
    pub type_uri: String,
    /// The fixed summary of the code.
    pub title: String,
    /// The HTTP status code, repeated in the body.
    pub status: u16,
    /// What went wrong in this occurrence, safe to show to the client.
    pub detail: String,
    /// The stable machine code.
    pub code: ErrorCode,
    /// Field errors, for `validation_failed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// For `mfa_required`: the short-lived, single-use token that continues the sign-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_token: Option<String>,
    /// Response headers that belong with this problem (`WWW-Authenticate` on a 401,
    /// `Retry-After` on a 429). Not part of the body.
    #[serde(skip)]
    pub headers: http::HeaderMap,
}

impl fmt::Debug for Problem {
    /// Everything but the `mfa_token`, a secret that must not reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Problem")
            .field("type_uri", &self.type_uri)
            .field("title", &self.title)
            .field("status", &self.status)
            .field("detail", &self.detail)
            .field("code", &self.code)
            .field("errors", &self.errors)
            .field("mfa_token", &self.mfa_token.as_ref().map(|_| ".."))
            .field("headers", &self.headers)
            .finish()
    }
}

impl Problem {
    /// A problem of kind `code` with a client-safe `detail`.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            type_uri: format!("urn:tenantkit:problem:{}", code.as_str()),
            title: code.title().to_owned(),
            status: code.status().as_u16(),
            detail: detail.into(),
            code,
            errors: Vec::new(),
            mfa_token: None,
            headers: http::HeaderMap::new(),
        }
    }

    /// The generic 500 answer for an internal failure: its cause belongs in the server log
    /// (log it before answering), never in the response.
    pub fn internal() -> Self {
        Self::new(
            ErrorCode::InternalError,
            "The server failed to handle the request.",
        )
    }

    /// Adds a response header to send with this problem.
    pub fn with_header(mut self, name: http::HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Adds the token that continues a sign-in (for `mfa_required`).
    pub fn with_mfa_token(mut self, token: impl Into<String>) -> Self {
        self.mfa_token = Some(token.into());
        self
    }

    /// Adds field errors (for `validation_failed`).
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    /// The HTTP status of this problem.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The serialized `application/problem+json` body.
    pub fn to_json(&self) -> Bytes {
        // Serializing plain strings, numbers and a unit enum cannot fail.
        serde_json::to_vec(self)
            .map(Bytes::from)
            .unwrap_or_else(|_| Bytes::from_static(b"{}"))
    }

    /// An HTTP response carrying this problem, for any body type built from bytes
    /// (`axum::body::Body`, `http_body_util::Full<Bytes>`, ...).
    pub fn into_response<B: From<Bytes>>(self) -> http::Response<B> {
        let mut response = http::Response::new(B::from(self.to_json()));
        *response.status_mut() = self.status();
        *response.headers_mut() = self.headers;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

impl From<&Error> for Problem {
    /// The one mapping from [`Error`] to HTTP. Internal errors are logged here with their
    /// cause and answered with a generic body, so no SQL or stack detail reaches a client.
    fn from(err: &Error) -> Self {
        match err {
            Error::NotFound => Problem::new(ErrorCode::NotFound, "The resource does not exist."),
            Error::Forbidden => Problem::new(
                ErrorCode::Forbidden,
                "Your role does not allow this action.",
            ),
            Error::BadRequest(detail) => Problem::new(ErrorCode::BadRequest, detail.clone()),
            Error::Validation(errors) => Problem::new(
                ErrorCode::ValidationFailed,
                "Some fields are invalid; see `errors`.",
            )
            .with_errors(errors.clone()),
            Error::Conflict(detail) => Problem::new(ErrorCode::Conflict, detail.clone()),
            Error::QuotaExceeded(detail) => Problem::new(ErrorCode::QuotaExceeded, detail.clone()),
            Error::VersionMismatch { current } => Problem::new(
                ErrorCode::PreconditionFailed,
                format!("The resource has changed; it is now at version {current}."),
            ),
            Error::Aborted
            | Error::Database(_)
            | Error::Migrate(_)
            | Error::Config(_)
            | Error::Secret(_) => {
                tracing::error!(error = %err, cause = ?std::error::Error::source(err), "internal error");
                Problem::internal()
            }
        }
    }
}

impl From<Error> for Problem {
    fn from(err: Error) -> Self {
        Problem::from(&err)
    }
}

#[cfg(feature = "axum")]
mod axum_impls {
    use ::axum::response::{IntoResponse, Response};

    use super::Problem;
    use crate::Error;

    impl IntoResponse for Problem {
        fn into_response(self) -> Response {
            Problem::into_response(self)
        }
    }

    impl IntoResponse for Error {
        fn into_response(self) -> Response {
            Problem::from(&self).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_consistent_status_and_spelling() {
        use ErrorCode::*;
        for code in [
            BadRequest,
            InvalidSignature,
            QuotaExceeded,
            UploadIncomplete,
            UploadMismatch,
            Unauthenticated,
            InvalidToken,
            TokenExpired,
            InvalidCredentials,
            RefreshTokenReused,
            MfaRequired,
            InsufficientUserAuthentication,
            SsoFailed,
            SsoRequired,
            Forbidden,
            MfaEnrollmentRequired,
            EmailUnverified,
            NotFound,
            MethodNotAllowed,
            Conflict,
            PreconditionFailed,
            PayloadTooLarge,
            UnsupportedMediaType,
            ValidationFailed,
            RateLimited,
            InternalError,
            ServiceUnavailable,
        ] {
            let json = serde_json::to_string(&code).expect("json");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let p = Problem::new(code, "x");
            assert_eq!(p.status, code.status().as_u16());
            if code != ErrorCode::InvalidToken
                && code != ErrorCode::TokenExpired
                && code != ErrorCode::InvalidCredentials
                && code != ErrorCode::RefreshTokenReused
                && code != ErrorCode::MfaRequired
                && code != ErrorCode::InsufficientUserAuthentication
                && code != ErrorCode::EmailUnverified
                && code != ErrorCode::MfaEnrollmentRequired
                && code != ErrorCode::SsoFailed
                && code != ErrorCode::SsoRequired
                && code != ErrorCode::InvalidSignature
                && code != ErrorCode::QuotaExceeded
                && code != ErrorCode::UploadIncomplete
                && code != ErrorCode::UploadMismatch
            {
                assert_eq!(ErrorCode::from_status(code.status()), Some(code), "{code}");
            }
        }
    }

    #[test]
    fn problem_response_is_rfc9457_json() {
        let response: http::Response<Bytes> =
            Problem::from(Error::invalid("limit", "must be at most 100")).into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let body: serde_json::Value = serde_json::from_slice(response.body()).expect("json");
        assert_eq!(body["type"], "urn:tenantkit:problem:validation_failed");
        assert_eq!(body["status"], 422);
        assert_eq!(body["code"], "validation_failed");
        assert_eq!(body["errors"][0]["field"], "limit");
        assert!(body["title"].is_string() && body["detail"].is_string());
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let err = Error::Database(sqlx::Error::Protocol("SELECT secret FROM users".into()));
        let problem = Problem::from(&err);
        assert_eq!(problem.code, ErrorCode::InternalError);
        assert!(!problem.detail.contains("SELECT"));
        assert!(!String::from_utf8_lossy(&problem.to_json()).contains("secret"));
    }
}
