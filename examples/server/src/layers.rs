//! The cross-cutting layers around every route, composed from tenantkit-core's
//! (`tenantkit_core::axum::layers`) with this server's configuration.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use tenantkit_core::axum::layers::{
    self, REQUEST_ID, close_after_unread_body_layer, drop_untrusted_request_id, panic_layer,
    problem_layer, request_span,
};
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::{AppState, Config};

/// The whole application: routes plus request ids, tracing, problem answers for every error,
/// panic containment, a request timeout and a body limit.
pub fn app(mut state: AppState, config: &Config) -> Router {
    let (routes, document) = crate::routes::router(&state, config);
    state.parts_mut().openapi = document;
    let state_for_storage = state.clone();
    let router = routes.fallback(layers::not_found).with_state(state).layer(
        ServiceBuilder::new()
            .map_request(drop_untrusted_request_id)
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    .on_response(DefaultOnResponse::new().level(Level::INFO)),
            )
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(problem_layer())
            .layer(close_after_unread_body_layer())
            .layer(panic_layer())
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
                    .layer(problem_layer())
                    .layer(close_after_unread_body_layer())
                    .layer(panic_layer())
                    .layer(TimeoutLayer::with_status_code(
                        StatusCode::REQUEST_TIMEOUT,
                        config.transfer_timeout(),
                    )),
            ),
        ),
        None => router,
    };
    // Security headers on every answer (HSTS when the public URL is https); the one HTML page
    // (`/docs`) sets its own content security policy, and routes that need caching (the JWKS,
    // the OpenAPI document) their own `Cache-Control`. CORS outermost, so preflight requests
    // are answered before anything else runs.
    let hsts = config.public_url().starts_with("https://");
    layers::security_headers(router, hsts).layer(layers::cors(&config.cors_origins))
}
