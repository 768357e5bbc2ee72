//! `/v1/realtime`: tenantkit-realtime's WebSocket endpoint and its tickets (the library does
//! the work; these handlers only adapt). The protocol is described by AsyncAPI at
//! `tenantkit_realtime::protocol::ASYNCAPI`.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tenantkit_core::Principal;
use tenantkit_realtime::Ticket;

use crate::{AppState, Result};

/// `GET /v1/realtime`: the WebSocket handshake (subprotocol `tenantkit.v1`). Authenticated by
/// `Authorization: Bearer`, or by `?ticket=` (single use, 30 s) where a browser cannot set
/// headers; a browser `Origin` must be one of the CORS origins.
#[utoipa::path(
    get,
    path = "/v1/realtime",
    tag = "realtime",
    params(("ticket" = Option<String>, Query, description = "A ticket from POST /v1/realtime/ticket, instead of the Authorization header")),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol (v1: JSON text frames; see the AsyncAPI document)"),
        (status = 400, description = "Not a WebSocket upgrade, an unsupported subprotocol, or a token in the URL", body = tenantkit_core::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No, an invalid or an expired token or ticket; a revoked session", body = tenantkit_core::Problem, content_type = "application/problem+json"),
        (status = 403, description = "A browser Origin that is not allowed", body = tenantkit_core::Problem, content_type = "application/problem+json"),
        (status = 429, description = "The tenant holds its share of connections", body = tenantkit_core::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn connect(State(state): State<AppState>, request: Request) -> Response {
    state.realtime.handshake(request).await.into_response()
}

/// `POST /v1/realtime/ticket`: a single-use ticket for one WebSocket connection within 30
/// seconds, standing for the caller (so no long-lived token travels in a URL).
#[utoipa::path(
    post,
    path = "/v1/realtime/ticket",
    tag = "realtime",
    responses(
        (status = 201, description = "The ticket", body = Ticket, headers(("Cache-Control" = String, description = "no-store"))),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn ticket(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<impl IntoResponse> {
    let tickets = state
        .realtime
        .tickets()
        .ok_or_else(tenantkit_core::Problem::internal)?;
    let ticket = tickets
        .issue(&principal)
        .await
        .map_err(crate::realtime::problem)?;
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(ticket),
    ))
}
