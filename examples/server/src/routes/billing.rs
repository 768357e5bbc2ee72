//! `/v1/billing/stripe/webhook`: Stripe's deliveries into tenantkit-billing's durable inbox
//! (the handler only adapts HTTP to `Billing::receive`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;
use utoipa::ToSchema;

use crate::{AppState, Result};

/// The answer to a stored delivery.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WebhookReceived {
    /// Always `true`: the event is durably stored (or was already).
    received: bool,
}

/// `POST /v1/billing/stripe/webhook`: no bearer token; the `Stripe-Signature` header over the
/// raw body is the authentication. 200 once the event is committed (also for a duplicate or
/// an unknown type); handlers run later, never before the answer.
#[utoipa::path(
    post,
    path = "/v1/billing/stripe/webhook",
    tag = "billing",
    params(("Stripe-Signature" = String, Header, description = "t=<unix time>,v1=<hex HMAC-SHA256>")),
    request_body(content = String, content_type = "application/json", description = "The raw Stripe event, exactly as Stripe sent it"),
    responses(
        (status = 200, description = "Stored", body = WebhookReceived),
        (status = 400, description = "`invalid_signature` (missing, forged, too old or too far in the future; nothing stored) or not an event", body = tenantkit_core::Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookReceived>> {
    let signature = headers.get("stripe-signature").map(|v| v.as_bytes());
    state.billing.receive(signature, &body).await?;
    Ok(Json(WebhookReceived { received: true }))
}
