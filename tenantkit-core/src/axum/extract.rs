//! Body, path and precondition extractors whose rejections are problem answers.

use std::str::FromStr;

use ::axum::extract::{FromRequest, FromRequestParts, Request};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, header};
use serde::de::DeserializeOwned;

use crate::{Error, ErrorCode, FieldError, Problem, Version};

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
        let bytes = ::axum::body::Bytes::from_request(req, state)
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
        let ::axum::extract::Path(raw) =
            ::axum::extract::Path::<String>::from_request_parts(parts, state)
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
        let ::axum::extract::Path((a, b)) =
            ::axum::extract::Path::<(String, String)>::from_request_parts(parts, state)
                .await
                .map_err(|_| not_found())?;
        match (a.parse(), b.parse()) {
            (Ok(a), Ok(b)) => Ok(ApiIds(a, b)),
            _ => Err(not_found()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TenantId;
    use crate::axum::test_support::send;
    use ::axum::Router;
    use ::axum::body::Body;
    use ::axum::routing::{get, post};
    use http::{Request, StatusCode};

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // Only deserialized.
    struct Item {
        name: String,
        size: u32,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)] // Only deserialized.
    struct Order {
        items: Vec<Item>,
    }

    fn router() -> Router {
        Router::new()
            .route(
                "/orders",
                post(|ApiJson(order): ApiJson<Order>| async move {
                    order.items.len().to_string()
                }),
            )
            .route(
                "/tenants/{id}",
                get(|ApiId(id): ApiId<TenantId>| async move { id.to_string() }),
            )
            .route(
                "/tenants/{id}/users/{user}",
                get(|ApiIds(a, b): ApiIds<TenantId, crate::UserId>| async move {
                    format!("{a} {b}")
                }),
            )
            .route(
                "/write",
                post(|IfMatch(version): IfMatch| async move { format!("{version:?}") }),
            )
    }

    fn json(body: &str) -> Request<Body> {
        Request::post("/orders")
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .expect("request")
    }

    async fn field_of(body: &str) -> (StatusCode, serde_json::Value) {
        let (response, problem) = send(router(), json(body)).await;
        (response.status(), problem)
    }

    #[tokio::test]
    async fn a_wrong_shape_names_the_field_at_fault() {
        let cases = [
            (r#"{"items":[{"name":"a","size":-1}]}"#, "items[0].size"),
            (r#"{"items":[{"name":"a"}]}"#, "items[0].size"),
            (
                r#"{"items":[{"name":"a","size":1,"colour":"red"}]}"#,
                "items[0].colour",
            ),
            (r#"{}"#, "items"),
            (r#"[1, 2]"#, "body"),
            (r#""text""#, "body"),
        ];
        for (body, field) in cases {
            let (status, problem) = field_of(body).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert_eq!(problem["code"], "validation_failed", "{body}");
            assert_eq!(problem["errors"][0]["field"], field, "{body}");
        }
        let (status, answer) = send(router(), json(r#"{"items":[]}"#)).await;
        assert_eq!(status.status(), StatusCode::OK);
        assert_eq!(answer, 0, "the handler saw an empty list");
    }

    #[tokio::test]
    async fn malformed_json_is_400_and_a_wrong_media_type_415() {
        for body in [
            r#"{"items": ["#,
            r#"{"items":[]} x"#,
            "{\"items\":[], \"\\ud800\":1}",
        ] {
            let (status, problem) = field_of(body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(problem["code"], "bad_request", "{body}");
        }
        for content_type in [None, Some("text/plain"), Some("application/xml")] {
            let mut request = Request::post("/orders");
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            let request = request
                .body(Body::from(r#"{"items":[]}"#))
                .expect("request");
            let (response, problem) = send(router(), request).await;
            assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
            assert_eq!(problem["code"], "unsupported_media_type");
        }
        let request = Request::post("/orders")
            .header(
                "content-type",
                "application/merge-patch+json; charset=utf-8",
            )
            .body(Body::from(r#"{"items":[]}"#))
            .expect("request");
        let (response, _) = send(router(), request).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn an_oversize_body_is_413() {
        let app = router().layer(::axum::extract::DefaultBodyLimit::max(16));
        let (response, problem) = send(app, json(r#"{"items":[], "padding": "...."}"#)).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(problem["code"], "payload_too_large");
    }

    #[tokio::test]
    async fn a_malformed_id_answers_404_like_a_missing_one() {
        let id = TenantId::new();
        let user = crate::UserId::new();
        let get_of = |path: String| Request::get(path).body(Body::empty()).expect("request");
        let (ok, _) = send(router(), get_of(format!("/tenants/{id}"))).await;
        assert_eq!(ok.status(), StatusCode::OK);
        let (ok, _) = send(router(), get_of(format!("/tenants/{id}/users/{user}"))).await;
        assert_eq!(ok.status(), StatusCode::OK);
        for path in [
            "/tenants/not-an-id".to_owned(),
            format!("/tenants/{id}/users/nope"),
            format!("/tenants/nope/users/{user}"),
        ] {
            let (response, problem) = send(router(), get_of(path.clone())).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(problem["code"], "not_found", "{path}");
        }
    }

    #[tokio::test]
    async fn if_match_takes_our_strong_etags_only() {
        let with = |value: Option<&str>| {
            let mut request = Request::post("/write");
            if let Some(value) = value {
                request = request.header("if-match", value);
            }
            request.body(Body::empty()).expect("request")
        };
        for (value, expected) in [
            (None, "None"),
            (Some("*"), "None"),
            (Some("\"7\""), "Some(Version(7))"),
        ] {
            let response = tower::ServiceExt::oneshot(router(), with(value))
                .await
                .expect("infallible");
            assert_eq!(response.status(), StatusCode::OK);
            let bytes = ::axum::body::to_bytes(response.into_body(), 1024)
                .await
                .expect("body");
            assert_eq!(String::from_utf8_lossy(&bytes), expected, "{value:?}");
        }
        for value in ["W/\"7\"", "7", "\"seven\""] {
            let (response, problem) = send(router(), with(Some(value))).await;
            assert_eq!(
                response.status(),
                StatusCode::PRECONDITION_FAILED,
                "{value}"
            );
            assert_eq!(problem["code"], "precondition_failed");
        }
        assert_eq!(etag(crate::Version::new(3))[header::ETAG], "\"3\"");
    }
}
