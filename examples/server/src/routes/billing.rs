//! `/v1/billing/stripe/webhook`: Stripe's deliveries into tenantkit-billing's durable inbox
//! (the handler only adapts HTTP to `Billing::receive`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;
use utoipa::ToSchema;

use tenantkit_core::{Permission, Principal, TenantScope};

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

/// The tenant's plan and what it grants.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BillingAnswer {
    /// The plan in effect (`free` without a paying subscription).
    plan: String,
    /// The newest subscription's Stripe status (`none` without one).
    status: String,
    /// When the current period ends (Unix seconds).
    current_period_end: Option<i64>,
    /// Whether the subscription ends then.
    cancel_at_period_end: bool,
    /// What the plan grants.
    entitlements: EntitlementsAnswer,
}

/// What a plan grants.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EntitlementsAnswer {
    /// Seats (members plus pending invitations); `null`: unlimited.
    seats: Option<u64>,
    /// Storage bytes (files plus pending uploads); `null`: unlimited.
    storage_bytes: Option<u64>,
    /// Feature flags.
    features: Vec<String>,
}

/// `GET /v1/billing` (admins and owners): plan, status, period end and entitlements.
#[utoipa::path(
    get,
    path = "/v1/billing",
    tag = "billing",
    responses((status = 200, description = "The tenant's plan and entitlements", body = BillingAnswer)),
    security(("bearer" = []))
)]
pub(crate) async fn get_billing(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<BillingAnswer>> {
    principal.require(Permission::ReadBilling)?;
    let mut tx = state.db.begin_read(&TenantScope::of(&principal)).await?;
    let status = state.plans.status(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(BillingAnswer {
        plan: status.plan,
        status: status.status,
        current_period_end: status.current_period_end,
        cancel_at_period_end: status.cancel_at_period_end,
        entitlements: EntitlementsAnswer {
            seats: status.entitlements.seats,
            storage_bytes: status.entitlements.storage_bytes,
            features: status.entitlements.features,
        },
    }))
}
