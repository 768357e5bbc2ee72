//! The cross-cutting layers around every route.

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use axum::{BoxError, Router};
use tenantkit_core::{ErrorCode, PROBLEM_JSON, Problem};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::{AppState, Config};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole application: routes plus request ids, tracing, problem answers for every error,
/// panic containment, a request timeout and a body limit.
pub fn app(mut state: AppState, config: &Config) -> Router {
    let (routes, document) = crate::routes::router(&state, config);
    state.parts_mut().openapi = document;
    let state_for_storage = state.clone();
    let router = routes
        .fallback(|| async { Problem::new(ErrorCode::NotFound, "No such route.") })
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .map_request(drop_untrusted_request_id)
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(DefaultOnResponse::new().level(Level::INFO)),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .map_response(problem_for_bare_errors)
                .map_response(close_after_unread_body)
                .layer(CatchPanicLayer::custom(panic_response))
                // Extractors enforce the limit with a clear 413; this layer also stops bodies
                // streamed without a Content-Length.
                .layer(RequestBodyLimitLayer::new(config.body_limit))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    config.request_timeout(),
                ))
                .layer(DefaultBodyLimit::max(config.body_limit)),
        );
    // Signed storage URLs: outside the body limit (the signed size bounds the body, which
    // is streamed) and the API's request timeout, under a transfer deadline of their own
    // (the store also cuts off bodies that stall or trickle), inside tracing, panic
    // containment and the headers.
    let router = match crate::routes::signed_url_routes(&state_for_storage) {
        Some(storage) => router.merge(
            storage.layer(
                ServiceBuilder::new()
                    .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                    .layer(TraceLayer::new_for_http().make_span_with(request_span))
                    .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                    .map_response(problem_for_bare_errors)
                    .map_response(close_after_unread_body)
                    .layer(CatchPanicLayer::custom(panic_response))
                    .layer(TimeoutLayer::with_status_code(
                        StatusCode::REQUEST_TIMEOUT,
                        config.transfer_timeout(),
                    )),
            ),
        ),
        None => router,
    };
    // CORS outermost, so preflight requests are answered before anything else runs.
    with_security_headers(router, config).layer(cors(config))
}

/// CORS from the configured origin allow-list; with none, browsers get no cross-origin access.
/// Credentials are bearer tokens in headers, never cookies, so no `allow_credentials`.
fn cors(config: &Config) -> CorsLayer {
    let origins: Vec<HeaderValue> = config
        .cors_origins
        .iter()
        .map(|origin| origin.trim())
        .filter(|origin| !origin.is_empty())
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
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

/// Headers every answer carries. The API serves JSON, so the strictest settings hold; the
/// one HTML page (`/docs`) sets its own content security policy, and routes that need caching
/// (the JWKS, the OpenAPI document) set their own `Cache-Control`.
///
/// When the public URL is `https`, every answer also carries HSTS (one year; no
/// `includeSubDomains` or `preload`, which would bind hosts this server does not own).
fn with_security_headers(router: Router, config: &Config) -> Router {
    let router = if config.public_url().starts_with("https://") {
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

/// A client may send its own request id for correlation, but only a short, plain one: it is
/// written to every log line of the request.
fn drop_untrusted_request_id<B>(mut request: Request<B>) -> Request<B> {
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

fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // The path only: query strings may carry tokens or cursors and stay out of logs.
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %request_id,
    )
}

/// Turns an error answer that is not a problem yet (a 405 from routing, a 408 from the timeout,
/// a 413 from the body limit) into one, keeping headers such as `Allow` and `Retry-After`.
fn problem_for_bare_errors<B>(response: Response<B>) -> Response<Body>
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

/// A request answered 413 or 408 may still be sending a body the server will not read: the
/// answer says `Connection: close`, so the client opens a new connection for its next request
/// instead of reusing one the server is about to close.
fn close_after_unread_body<B>(mut response: Response<B>) -> Response<B> {
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

/// A panic is a bug: the client gets a generic 500, the panic message goes to the log only.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %message, "handler panicked");
    Problem::internal().into_response()
}
