//! The cross-cutting answers of an API: every error a problem (routing's 405, a timeout's
//! 408, a body limit's 413 included), a panic a generic 500, an unknown route a 404 problem,
//! request ids a client may not abuse, security headers and CORS.
//!
//! ```
//! use axum::Router;
//! use axum::routing::get;
//! use tenantkit_core::axum::layers;
//! use tower::ServiceBuilder;
//!
//! let app: Router = Router::new()
//!     .route("/v1/ping", get(|| async { "pong" }))
//!     .fallback(layers::not_found)
//!     .layer(
//!         ServiceBuilder::new()
//!             .layer(layers::problem_layer())
//!             .layer(layers::close_after_unread_body_layer())
//!             .layer(layers::panic_layer()),
//!     );
//! let app = layers::security_headers(app, true).layer(layers::cors(["https://app.example"]));
//! # let _ = app;
//! ```

use std::any::Any;

use ::axum::body::{Body, Bytes, HttpBody};
use ::axum::{BoxError, Router};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use tower::util::MapResponseLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::{ErrorCode, PROBLEM_JSON, Problem};

/// The request id header: set on every request (a client's own only when short and plain, see
/// [`drop_untrusted_request_id`]) and echoed on every answer.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The answer for a route that does not exist: 404 `not_found`, as a fallback handler
/// (`Router::fallback(layers::not_found)`).
pub async fn not_found() -> Problem {
    Problem::new(ErrorCode::NotFound, "No such route.")
}

/// A client may send its own request id for correlation, but only a short, plain one (1 to 64
/// of `A-Z a-z 0-9 - _ .`): it is written to every log line of the request. Anything else is
/// removed, so the id layer sets a fresh one. For `ServiceBuilder::map_request`.
pub fn drop_untrusted_request_id<B>(mut request: Request<B>) -> Request<B> {
    let acceptable = request.headers().get(&REQUEST_ID).is_some_and(|value| {
        let bytes = value.as_bytes();
        (1..=64).contains(&bytes.len())
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    });
    if !acceptable {
        request.headers_mut().remove(&REQUEST_ID);
    }
    request
}

/// The tracing span of a request: method, path (never the query string, which may carry
/// tokens or cursors) and request id. For `TraceLayer::make_span_with`.
pub fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %request_id,
    )
}

/// Turns an error answer that is not a problem yet (a 405 from routing, a 408 from a timeout,
/// a 413 from a body limit) into one, keeping headers such as `Allow` and `Retry-After`.
/// Answers that are problems already, and non-error answers, pass unchanged.
pub fn problem_for_bare_errors<B>(response: Response<B>) -> Response<Body>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    let Some(code) = ErrorCode::from_status(status).filter(|_| !is_problem) else {
        return response.map(Body::new);
    };
    let detail = match code {
        ErrorCode::MethodNotAllowed => "This route does not support the method; see `Allow`.",
        ErrorCode::RequestTimeout => "The request took too long.",
        ErrorCode::PayloadTooLarge => "The body is larger than this server accepts.",
        _ => code.title(),
    };
    let (parts, _) = response.into_parts();
    let mut problem: Response<Body> = Problem::new(code, detail).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().append(name, value.clone());
        }
    }
    problem
}

/// [`problem_for_bare_errors`] as a layer.
pub fn problem_layer<B>() -> MapResponseLayer<fn(Response<B>) -> Response<Body>>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    MapResponseLayer::new(problem_for_bare_errors::<B> as fn(Response<B>) -> Response<Body>)
}

/// A request answered 413 or 408 may still be sending a body the server will not read: the
/// answer says `Connection: close`, so the client opens a new connection for its next request
/// instead of reusing one the server is about to close.
pub fn close_after_unread_body<B>(mut response: Response<B>) -> Response<B> {
    if matches!(
        response.status(),
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
    ) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// [`close_after_unread_body`] as a layer.
pub fn close_after_unread_body_layer<B>() -> MapResponseLayer<fn(Response<B>) -> Response<B>> {
    MapResponseLayer::new(close_after_unread_body::<B> as fn(Response<B>) -> Response<B>)
}

/// A panic is a bug: the client gets a generic 500 problem, the panic message goes to the log
/// only. For `CatchPanicLayer::custom`.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %message, "handler panicked");
    Problem::internal().into_response()
}

/// The function type [`panic_layer`] answers panics with.
pub type PanicResponder = fn(Box<dyn Any + Send + 'static>) -> Response<Body>;

/// [`panic_response`] as a layer: a panicking handler answers a generic 500 problem.
pub fn panic_layer() -> CatchPanicLayer<PanicResponder> {
    CatchPanicLayer::custom(panic_response as PanicResponder)
}

/// Headers every answer carries: `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`,
/// `Referrer-Policy: no-referrer`, and unless a route set its own, `Content-Security-Policy:
/// default-src 'none'; frame-ancestors 'none'` (an API serves JSON) and `Cache-Control:
/// no-store`.
///
/// With `hsts` (set it when the public URL is `https`), every answer also carries
/// `Strict-Transport-Security: max-age=31536000` (one year; no `includeSubDomains` or
/// `preload`, which would bind hosts the server may not own).
pub fn security_headers<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    hsts: bool,
) -> Router<S> {
    let router = if hsts {
        router.layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        ))
    } else {
        router
    };
    let router = router.layer(SetResponseHeaderLayer::if_not_present(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    ));
    let fixed = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    let router = fixed.into_iter().fold(router, |router, (name, value)| {
        router.layer(SetResponseHeaderLayer::overriding(
            name,
            HeaderValue::from_static(value),
        ))
    });
    router.layer(SetResponseHeaderLayer::if_not_present(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    ))
}

/// CORS for exactly the `origins` listed (blank and unparsable entries are skipped; with none,
/// browsers get no cross-origin access). Methods `GET POST PATCH DELETE`; request headers
/// `Authorization`, `Content-Type`, `If-Match`; exposed `ETag`, `Location`, `Retry-After` and
/// the request id. Credentials are bearer tokens in headers, never cookies, so no
/// `allow_credentials`. Put it outermost, so preflights are answered before anything runs.
pub fn cors<I>(origins: I) -> CorsLayer
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    let origins: Vec<HeaderValue> = origins
        .into_iter()
        .filter_map(|origin| {
            let origin = origin.as_ref().trim();
            (!origin.is_empty())
                .then(|| HeaderValue::from_str(origin).ok())
                .flatten()
        })
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
        ])
        .expose_headers([
            header::ETAG,
            header::LOCATION,
            header::RETRY_AFTER,
            REQUEST_ID,
        ])
        .max_age(std::time::Duration::from_secs(600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::axum::test_support::send;
    use ::axum::routing::{get, post};
    use tower::ServiceBuilder;

    fn app() -> Router {
        let router = Router::new()
            .route("/ok", get(|| async { "ok" }))
            .route("/panic", get(boom))
            .route(
                "/large",
                post(|| async { (StatusCode::PAYLOAD_TOO_LARGE, [("retry-after", "5")]) }),
            )
            .fallback(not_found)
            .layer(
                ServiceBuilder::new()
                    .layer(problem_layer())
                    .layer(close_after_unread_body_layer())
                    .layer(panic_layer()),
            );
        security_headers(router, true).layer(cors(["https://app.example", " ", "\n"]))
    }

    async fn boom() -> &'static str {
        std::panic::panic_any(String::from("secret detail"))
    }

    fn get_of(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).expect("request")
    }

    #[tokio::test]
    async fn an_unknown_route_a_bad_method_and_a_panic_answer_problems() {
        let (response, body) = send(app(), get_of("/nope")).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(body["code"], "not_found");

        let request = Request::delete("/ok").body(Body::empty()).expect("request");
        let (response, body) = send(app(), request).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body["code"], "method_not_allowed");
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert!(response.headers().contains_key(header::ALLOW));

        let (response, body) = send(app(), get_of("/panic")).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["code"], "internal_error");
        assert!(!body.to_string().contains("secret detail"));
    }

    #[tokio::test]
    async fn a_bare_413_becomes_a_problem_that_keeps_its_headers_and_closes() {
        let request = Request::post("/large")
            .body(Body::empty())
            .expect("request");
        let (response, body) = send(app(), request).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["code"], "payload_too_large");
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        assert_eq!(response.headers()[header::CONNECTION], "close");
    }

    #[tokio::test]
    async fn every_answer_carries_the_security_headers() {
        for path in ["/ok", "/nope"] {
            let (response, _) = send(app(), get_of(path)).await;
            let headers = response.headers();
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
            assert_eq!(headers[header::CACHE_CONTROL], "no-store");
            assert_eq!(
                headers[header::STRICT_TRANSPORT_SECURITY],
                "max-age=31536000"
            );
            assert!(headers.contains_key(header::CONTENT_SECURITY_POLICY));
        }
    }

    #[tokio::test]
    async fn cors_answers_only_the_listed_origins() {
        let preflight = |origin: &str| {
            Request::builder()
                .method(Method::OPTIONS)
                .uri("/ok")
                .header(header::ORIGIN, origin)
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
                .body(Body::empty())
                .expect("request")
        };
        let (allowed, _) = send(app(), preflight("https://app.example")).await;
        assert_eq!(
            allowed.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        let (refused, _) = send(app(), preflight("https://evil.example")).await;
        assert!(
            !refused
                .headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        );
    }

    #[test]
    fn only_short_plain_request_ids_are_kept() {
        let with = |id: &str| {
            let request = Request::get("/")
                .header(&REQUEST_ID, id)
                .body(())
                .expect("request");
            drop_untrusted_request_id(request)
                .headers()
                .get(&REQUEST_ID)
                .map(|v| v.as_bytes().to_vec())
        };
        assert_eq!(with("abc-123_x.y"), Some(b"abc-123_x.y".to_vec()));
        assert_eq!(with(&"a".repeat(65)), None);
        assert_eq!(with("a b"), None);
        assert_eq!(with("a/b"), None);
    }
}
