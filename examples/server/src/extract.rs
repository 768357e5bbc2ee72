//! Extractors that turn every kind of bad input into a problem response with a stable code.

use std::str::FromStr;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;
use tenantkit_core::{Error, ErrorCode, FieldError, Problem, Version};

/// A JSON body. Malformed JSON is 400 `bad_request`, a wrong shape or type 422
/// `validation_failed`, a missing or wrong `Content-Type` 415, an oversize body 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

fn json_problem(rejection: JsonRejection) -> Problem {
    match rejection {
        JsonRejection::JsonSyntaxError(err) => Problem::new(
            ErrorCode::BadRequest,
            format!("The body is not valid JSON: {}", source_text(&err)),
        ),
        JsonRejection::JsonDataError(err) => Problem::new(
            ErrorCode::ValidationFailed,
            "The body does not have the expected shape; see `errors`.",
        )
        .with_errors(vec![FieldError::new("body", source_text(&err))]),
        JsonRejection::MissingJsonContentType(_) => Problem::new(
            ErrorCode::UnsupportedMediaType,
            "The body must be sent with `Content-Type: application/json`.",
        ),
        JsonRejection::BytesRejection(err)
            if err.status() == http::StatusCode::PAYLOAD_TOO_LARGE =>
        {
            Problem::new(
                ErrorCode::PayloadTooLarge,
                "The body is larger than this server accepts.",
            )
        }
        other => Problem::new(
            ErrorCode::BadRequest,
            format!("The body could not be read ({}).", other.status()),
        ),
    }
}

/// serde_json's message (with line and column), without axum's wrapper text.
fn source_text(err: &dyn std::error::Error) -> String {
    let mut innermost = err;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    let text = innermost.to_string();
    // A message can quote the input; keep it bounded.
    text.chars().take(300).collect()
}

/// A resource id from the path. A malformed id names no resource, so it answers 404 exactly
/// like a missing or another tenant's id.
#[derive(Debug, Clone, Copy)]
pub struct ApiId<T>(pub T);

impl<T: FromStr + Send, S: Send + Sync> FromRequestParts<S> for ApiId<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let not_found = || Problem::from(Error::NotFound);
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| not_found())?;
        raw.parse().map(ApiId).map_err(|_| not_found())
    }
}

/// Two ids from the path (`/v1/teams/{id}/members/{user_id}`); like [`ApiId`], a malformed
/// one answers 404 exactly like a missing record.
#[derive(Debug, Clone, Copy)]
pub struct ApiIds<A, B>(pub A, pub B);

impl<A: FromStr + Send, B: FromStr + Send, S: Send + Sync> FromRequestParts<S> for ApiIds<A, B> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let not_found = || Problem::from(Error::NotFound);
        let axum::extract::Path((a, b)) =
            axum::extract::Path::<(String, String)>::from_request_parts(parts, state)
                .await
                .map_err(|_| not_found())?;
        match (a.parse(), b.parse()) {
            (Ok(a), Ok(b)) => Ok(ApiIds(a, b)),
            _ => Err(not_found()),
        }
    }
}

/// Query parameters as raw strings, so each can be validated into a field error rather than
/// failing the whole query string at once.
#[derive(Debug, Clone, Default)]
pub struct RawQuery(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for RawQuery {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(pairs)| RawQuery(pairs))
            .map_err(|_| Problem::new(ErrorCode::BadRequest, "The query string is malformed."))
    }
}

impl RawQuery {
    /// The value of `name`, if given once. A repeated parameter is a field error.
    pub fn get(&self, name: &str, errors: &mut Vec<FieldError>) -> Option<&str> {
        let mut values = self
            .0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            errors.push(FieldError::new(name, "must be given at most once"));
            return None;
        }
        first
    }

    /// Parses `name` with `FromStr`, recording `message` as a field error when it fails.
    pub fn parse<T: FromStr>(
        &self,
        name: &str,
        message: &str,
        errors: &mut Vec<FieldError>,
    ) -> Option<T> {
        let raw = self.get(name, errors)?;
        match raw.parse() {
            Ok(value) => Some(value),
            Err(_) => {
                errors.push(FieldError::new(name, message));
                None
            }
        }
    }

    /// Rejects parameters the endpoint does not know, so typos do not silently do nothing.
    pub fn reject_unknown(&self, known: &[&str], errors: &mut Vec<FieldError>) {
        for (name, _) in &self.0 {
            if !known.contains(&name.as_str()) && !errors.iter().any(|e| &e.field == name) {
                errors.push(FieldError::new(
                    name.as_str(),
                    "is not a parameter of this endpoint",
                ));
            }
        }
    }
}

/// The `If-Match` precondition of a write: `None` when absent or `*`.
#[derive(Debug, Clone, Copy, Default)]
pub struct IfMatch(pub Option<Version>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let text = value.to_str().unwrap_or_default().trim();
        if text == "*" {
            return Ok(IfMatch(None));
        }
        // We only ever send strong ETags `"<version>"`; a weak one cannot match (RFC 9110).
        text.strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .and_then(|t| t.parse::<i64>().ok())
            .map(|v| IfMatch(Some(Version::new(v))))
            .ok_or_else(|| {
                Problem::new(
                    ErrorCode::PreconditionFailed,
                    "If-Match must be an ETag previously returned by this API.",
                )
            })
    }
}

/// The `ETag` header value for a record version.
pub fn etag(version: Version) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&format!("\"{version}\"")) {
        headers.insert(header::ETAG, value);
    }
    headers
}

/// The client's IP address, from the connection. (Behind a reverse proxy every client shares
/// the proxy's address; trusting `X-Forwarded-For` needs a configured list of proxies, which
/// is not offered yet.) Without connection info — requests driven in-process — it is the
/// unspecified address, so all such requests share one bucket.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub std::net::IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map_or(
                std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                |info| info.0.ip(),
            );
        Ok(ClientIp(ip))
    }
}

/// Who is calling, for the audit log: client IP and user agent.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The client's IP address (see [`ClientIp`]).
    pub ip: std::net::IpAddr,
    /// The `User-Agent` header, if it is text.
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// An audit event for `action` by `actor` from this client.
    pub fn event(
        &self,
        action: &str,
        actor: Option<tenantkit_core::UserId>,
    ) -> tenantkit_core::AuditEvent {
        let mut event = tenantkit_core::AuditEvent::new(action);
        event.actor_id = actor;
        event.ip = Some(self.ip.to_string());
        event.user_agent = self.user_agent.clone();
        event
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(ClientInfo { ip, user_agent })
    }
}

/// The verified caller if the request carried a valid token (routes behind
/// `JwtAuthLayer::optional`), else `None`.
#[derive(Debug, Clone)]
pub struct MaybePrincipal(pub Option<tenantkit_core::Principal>);

impl<S: Send + Sync> FromRequestParts<S> for MaybePrincipal {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(MaybePrincipal(
            parts.extensions.get::<tenantkit_core::Principal>().cloned(),
        ))
    }
}
