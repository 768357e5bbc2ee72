//! Extractors that turn every kind of bad input into a problem response with a stable code.

use std::any::TypeId;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{LazyLock, PoisonError, RwLock};

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use serde::de::DeserializeOwned;
use tenantkit_core::{Error, ErrorCode, FieldError, PageRequest, Problem, Version};
use utoipa::IntoParams;
use utoipa::openapi::path::ParameterIn;

/// A JSON object body. Malformed JSON is 400 `bad_request`; a wrong shape or type 422
/// `validation_failed` naming the field at fault (`size` for `"size": -1`, `items[0].name`
/// inside a list, the missing or unknown field's own name), as every other validation error
/// does; only a body that is not a JSON object at all is named `body` (serde would otherwise
/// read an array positionally into a struct's fields, a shape no client is documented to
/// send); a missing or wrong `Content-Type` 415; an oversize body 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(Problem::new(
                ErrorCode::UnsupportedMediaType,
                "The body must be sent with `Content-Type: application/json`.",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::new(
                        ErrorCode::PayloadTooLarge,
                        "The body is larger than this server accepts.",
                    )
                } else {
                    Problem::new(
                        ErrorCode::BadRequest,
                        format!("The body could not be read ({}).", rejection.status()),
                    )
                }
            })?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| matches!(b, b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n'))
            && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok()
        {
            return Err(Problem::new(
                ErrorCode::ValidationFailed,
                "The body does not have the expected shape; see `errors`.",
            )
            .with_errors(vec![FieldError::new("body", "must be a JSON object")]));
        }
        parse_json(&bytes).map(ApiJson)
    }
}

/// Deserializes a JSON body as `T`, keeping the path to whatever failed (as axum's own `Json`
/// does, but answering the path as the field rather than as text).
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        match err.inner().classify() {
            serde_json::error::Category::Data => data_problem(&err, None),
            // serde_json reports some values of the wrong type (a number where an enum's
            // string belongs) as syntax errors: valid JSON makes them a shape problem.
            _ if is_shape_error(bytes, err.inner()) => {
                data_problem(&err, Some("has the wrong type"))
            }
            _ => syntax_problem(err.inner()),
        }
    })?;
    // Trailing characters after the value.
    deserializer.end().map_err(|err| syntax_problem(&err))?;
    Ok(value)
}

/// Whether a syntax error of serde_json's is really a value of the wrong shape in valid JSON.
/// Invalid UTF-8 and bad escapes (a lone surrogate) are syntax errors that serde's
/// `IgnoredAny` skips over without looking, so they are excluded first.
fn is_shape_error(bytes: &[u8], err: &serde_json::Error) -> bool {
    let text = err.to_string();
    std::str::from_utf8(bytes).is_ok()
        && !text.contains("surrogate")
        && !text.contains("escape")
        && !text.contains("control character")
        && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

fn syntax_problem(err: &serde_json::Error) -> Problem {
    Problem::new(
        ErrorCode::BadRequest,
        format!("The body is not valid JSON: {}", bounded(&err.to_string())),
    )
}

/// 422 naming the field at fault: the path serde was at (an unknown field's own name
/// included), and for a missing field, the field its message names.
fn data_problem(
    err: &serde_path_to_error::Error<serde_json::Error>,
    message: Option<&str>,
) -> Problem {
    let inner = err.inner();
    let mut message = message.map_or_else(|| inner.to_string(), str::to_owned);
    // The position says nothing the field does not; the message reads better without it.
    let position = format!(" at line {} column {}", inner.line(), inner.column());
    if let Some(stripped) = message.strip_suffix(&position) {
        message = stripped.to_owned();
    }
    let path = field_path(err.path());
    // serde's own wording (`serde::de::Error::missing_field`): serde stands on the object, so
    // the path ends before the field.
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_owned());
    let field = match (path, missing) {
        (Some(path), Some(name)) => format!("{path}.{name}"),
        (None, Some(name)) => name,
        (Some(path), None) => path,
        (None, None) => "body".to_owned(),
    };
    Problem::new(
        ErrorCode::ValidationFailed,
        "The body does not have the expected shape; see `errors`.",
    )
    // The field is the client's own text (an unknown key may be any length): bounded too.
    .with_errors(vec![FieldError::new(bounded(&field), bounded(&message))])
}

/// `a.b[2].c` for a path into the body; `None` at the top level (or where serde could not
/// tell which field it was in).
fn field_path(path: &serde_path_to_error::Path) -> Option<String> {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => return None,
        }
    }
    (!out.is_empty()).then_some(out)
}

/// A message can quote the input; keep it bounded.
fn bounded(text: &str) -> String {
    text.chars().take(300).collect()
}

/// `application/json` or any `application/*+json`, as axum's own check.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
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

/// At most this many query parameters; a longer query string answers 400 before any of it
/// is looked at, so its cost per request is bounded.
pub const MAX_QUERY_PARAMETERS: usize = 64;

/// The query parameters a type declares (its `IntoParams` names), computed once per type.
fn parameter_names<T: IntoParams + 'static>() -> &'static [String] {
    static NAMES: LazyLock<RwLock<HashMap<TypeId, &'static [String]>>> =
        LazyLock::new(Default::default);
    let key = TypeId::of::<T>();
    if let Some(names) = NAMES
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return names;
    }
    let names: Vec<String> = T::into_params(|| Some(ParameterIn::Query))
        .into_iter()
        .map(|p| p.name)
        .collect();
    let names: &'static [String] = Box::leak(names.into_boxed_slice());
    NAMES
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key, names);
    names
}

/// The raw `name=value` pairs of a query string, decoded, at most
/// [`MAX_QUERY_PARAMETERS`] of them.
fn query_pairs(parts: &Parts) -> Result<Vec<(String, String)>, Problem> {
    let query = parts.uri.query().unwrap_or_default();
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .take(MAX_QUERY_PARAMETERS + 1)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if pairs.len() > MAX_QUERY_PARAMETERS {
        return Err(Problem::new(
            ErrorCode::BadRequest,
            format!("The query string has more than {MAX_QUERY_PARAMETERS} parameters."),
        ));
    }
    Ok(pairs)
}

/// Deserializes `T` from `pairs`; when that fails, finds every pair that fails on its own, so
/// one answer names every bad parameter.
fn deserialize_pairs<T: DeserializeOwned>(
    pairs: &[(&str, &str)],
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    let encode = |pairs: &[(&str, &str)]| {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    };
    match serde_urlencoded::from_str::<T>(&encode(pairs)) {
        Ok(value) => Some(value),
        Err(whole) => {
            let before = errors.len();
            for pair in pairs {
                if let Err(err) =
                    serde_urlencoded::from_str::<T>(&encode(std::slice::from_ref(pair)))
                {
                    let message: String = err.to_string().chars().take(200).collect();
                    errors.push(FieldError::new(pair.0, format!("is invalid: {message}")));
                }
            }
            if errors.len() == before {
                // Every parameter is fine on its own, but not together.
                let message: String = whole.to_string().chars().take(200).collect();
                errors.push(FieldError::new("query", message));
            }
            None
        }
    }
}

/// Splits the pairs into those `known` names, once each; unknown and repeated names become
/// field errors (each named once).
fn known_pairs<'a>(
    pairs: &'a [(String, String)],
    known: &HashSet<&str>,
    errors: &mut Vec<FieldError>,
) -> Vec<(&'a str, &'a str)> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut reported: HashSet<&str> = HashSet::new();
    let mut accepted = Vec::new();
    for (name, value) in pairs {
        let name = name.as_str();
        if !known.contains(name) {
            if reported.insert(name) {
                errors.push(FieldError::new(name, "is not a parameter of this endpoint"));
            }
        } else if !seen.insert(name) {
            if reported.insert(name) {
                errors.push(FieldError::new(name, "must be given at most once"));
            }
        } else {
            accepted.push((name, value.as_str()));
        }
    }
    // A repeated parameter is refused, not resolved to its first value.
    accepted.retain(|(name, _)| !reported.contains(name));
    accepted
}

/// A query-string filter of a list: its `IntoParams` declaration is both the OpenAPI
/// documentation and the set of names the endpoint accepts, so the two cannot drift.
pub trait QueryFilter: DeserializeOwned + IntoParams + Default + Send + 'static {
    /// Checks what the types alone cannot (lengths, ranges), adding field errors.
    fn check(&self, _errors: &mut Vec<FieldError>) {}
}

impl QueryFilter for NoFilter {}

/// The filter of a list that has none.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NoFilter {}

/// `limit` and `cursor`, on every list.
#[derive(Debug, Default, serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1 to 100 (default 20); out of range is 422, never capped.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The query of a list endpoint: the page and the endpoint's filter `F`. Unknown or repeated
/// parameters and invalid values answer 422 `validation_failed`, every one named in `errors`.
#[derive(Debug)]
pub struct Listing<F> {
    /// Which page.
    pub page: PageRequest,
    /// The filter.
    pub filter: F,
}

impl<F: QueryFilter, S: Send + Sync> FromRequestParts<S> for Listing<F> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let pairs = query_pairs(parts)?;
        let page_names = parameter_names::<PageQuery>();
        let filter_names = parameter_names::<F>();
        let known: HashSet<&str> = page_names
            .iter()
            .chain(filter_names)
            .map(String::as_str)
            .collect();
        let mut errors = Vec::new();
        let accepted = known_pairs(&pairs, &known, &mut errors);
        let of = |names: &[String]| -> Vec<(&str, &str)> {
            accepted
                .iter()
                .filter(|(name, _)| names.iter().any(|n| n == name))
                .copied()
                .collect()
        };
        let page_query: Option<PageQuery> = deserialize_pairs(&of(page_names), &mut errors);
        let filter: Option<F> = deserialize_pairs(&of(filter_names), &mut errors);
        let page = match page_query {
            Some(query) => match PageRequest::from_query(query.limit, query.cursor.as_deref()) {
                Ok(page) => Some(page),
                Err(Error::Validation(more)) => {
                    errors.extend(more);
                    None
                }
                Err(other) => return Err(other.into()),
            },
            None => None,
        };
        if let Some(filter) = &filter {
            filter.check(&mut errors);
        }
        match (page, filter) {
            (Some(page), Some(filter)) if errors.is_empty() => Ok(Listing { page, filter }),
            _ => Err(Error::Validation(errors).into()),
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

/// The client's IP address: the TCP peer, or behind a trusted reverse proxy the address its
/// forwarding header names: only the configured one (`TENANTKIT_FORWARDED_HEADER`), so a
/// client's own `Forwarded` behind an `X-Forwarded-For` proxy names nobody (see
/// [`tenantkit_core::TrustedProxies`]). Without connection
/// info (requests driven in-process) it is the unspecified address, so all such requests share
/// one bucket.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub std::net::IpAddr);

impl FromRequestParts<crate::AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &crate::AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map_or(
                std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                |info| info.0.ip(),
            );
        Ok(ClientIp(state.proxies.client(peer, &parts.headers)))
    }
}

/// Who is calling: client IP and user agent, for rate limits and the audit log (tenantkit-core's
/// [`tenantkit_core::ClientInfo`], extracted from the request).
#[derive(Debug, Clone)]
pub struct Client(pub tenantkit_core::ClientInfo);

impl FromRequestParts<crate::AppState> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &crate::AppState,
    ) -> Result<Self, Self::Rejection> {
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Client(tenantkit_core::ClientInfo { ip, user_agent }))
    }
}

impl std::ops::Deref for Client {
    type Target = tenantkit_core::ClientInfo;

    fn deref(&self) -> &Self::Target {
        &self.0
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
