//! `/v1/billing/stripe/webhook`: Stripe's deliveries into tenantkit-billing's durable inbox
//! (tenantkit-billing's own route, with this document's entry); `/v1/billing`: the tenant's plan;
//! `/v1/billing/checkout` and `/portal`: Stripe-hosted pages (`StripeSessions`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::UtoipaMethodRouter;
use utoipa_axum::routes;

use tenantkit_core::{ErrorCode, Permission, Principal, Problem, TenantScope};

use crate::{AppState, Result};

/// The answer to a stored delivery (the document's name for tenantkit-billing's
/// `axum::Received`).
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // Documentation only: the route answers with the library's type.
pub(crate) struct WebhookReceived {
    /// Always `true`: the event is durably stored (or was already).
    received: bool,
}

/// `POST /v1/billing/stripe/webhook`: no bearer token; the `Stripe-Signature` header over the
/// raw body is the authentication. 200 once the event is committed (also for a duplicate or
/// an unknown type); handlers run later, never before the answer.
///
/// The document's entry only: [`webhook`] mounts tenantkit-billing's own route in its place.
#[utoipa::path(
    post,
    path = "/v1/billing/stripe/webhook",
    tag = "billing",
    params(("Stripe-Signature" = String, Header, description = "t=<unix time>,v1=<hex HMAC-SHA256>")),
    request_body(content = String, content_type = "application/json", description = "The raw Stripe event, exactly as Stripe sent it"),
    responses(
        (status = 200, description = "Stored", body = WebhookReceived),
        (status = 400, description = "`invalid_signature` (missing, forged, too old or too far in the future; nothing stored) or `bad_request` (not an event)", body = tenantkit_core::Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: larger than the inbox reads (nothing stored)", body = tenantkit_core::Problem, content_type = "application/problem+json"),
    )
)]
async fn stripe_webhook() -> StatusCode {
    StatusCode::NOT_FOUND
}

/// The webhook route: tenantkit-billing's (`tenantkit_billing::axum::webhook_route`: body
/// limit, signature, durable insert, problem+json refusals) with this document's entry.
pub(crate) fn webhook(state: &AppState) -> UtoipaMethodRouter<AppState> {
    let (schemas, paths, _): UtoipaMethodRouter<AppState> = routes!(stripe_webhook);
    (
        schemas,
        paths,
        tenantkit_billing::axum::webhook_route(state.billing.clone()),
    )
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

/// What to subscribe to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckoutRequest {
    /// A plan of the plans file that has a Stripe price.
    #[schema(min_length = 1, max_length = 64)]
    plan: String,
}

/// A Stripe-hosted page to send the user to.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HostedSessionAnswer {
    /// The session's Stripe id.
    id: String,
    /// Its URL on Stripe.
    url: String,
}

fn sessions(state: &AppState) -> Result<&tenantkit_billing::StripeSessions> {
    state.stripe.as_ref().ok_or_else(|| {
        Problem::new(
            ErrorCode::ServiceUnavailable,
            "Stripe checkout is not configured on this server (TENANTKIT_STRIPE_API_KEY).",
        )
    })
}

/// `POST /v1/billing/checkout` (owner): a Stripe Checkout session subscribing the tenant to
/// a plan. The tenant is named in the session, so the signed events that follow set its plan.
#[utoipa::path(
    post,
    path = "/v1/billing/checkout",
    tag = "billing",
    request_body = CheckoutRequest,
    responses(
        (status = 200, description = "Send the owner to `url`", body = HostedSessionAnswer),
        (status = 409, description = "`conflict`: the tenant already has a subscription (use the portal)", body = tenantkit_core::Problem, content_type = "application/problem+json"),
        (status = 503, description = "`service_unavailable`: checkout is not configured, or Stripe failed", body = tenantkit_core::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn checkout(
    State(state): State<AppState>,
    principal: Principal,
    crate::extract::ApiJson(request): crate::extract::ApiJson<CheckoutRequest>,
) -> Result<Json<HostedSessionAnswer>> {
    principal.require(Permission::ManageBilling)?;
    let session = sessions(&state)?
        .checkout(&state.db, &principal, &request.plan)
        .await?;
    Ok(Json(HostedSessionAnswer {
        id: session.id,
        url: session.url,
    }))
}

/// `POST /v1/billing/portal` (owner): a Stripe customer-portal session for the tenant.
#[utoipa::path(
    post,
    path = "/v1/billing/portal",
    tag = "billing",
    responses(
        (status = 200, description = "Send the owner to `url`", body = HostedSessionAnswer),
        (status = 409, description = "`conflict`: the tenant has no Stripe customer yet (subscribe first)", body = tenantkit_core::Problem, content_type = "application/problem+json"),
        (status = 503, description = "`service_unavailable`: checkout is not configured, or Stripe failed", body = tenantkit_core::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn portal(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<HostedSessionAnswer>> {
    principal.require(Permission::ManageBilling)?;
    let session = sessions(&state)?.portal(&state.db, &principal).await?;
    Ok(Json(HostedSessionAnswer {
        id: session.id,
        url: session.url,
    }))
}
