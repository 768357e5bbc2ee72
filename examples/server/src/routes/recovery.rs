//! Password reset and email verification: adapters over tenantkit-auth's flows.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use tenantkit_auth::flows::{ResetConfirm, ResetRequest, VerifyConfirm};
use tenantkit_core::Principal;

use crate::extract::{ApiJson, Client};
use crate::{AppState, Result};

/// The answer to a request whose outcome must not be revealed (does the account exist?).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Accepted {
    /// What happens next.
    status: &'static str,
}

/// `POST /v1/auth/password-reset/request`: always 202, whether or not the account exists.
#[utoipa::path(
    post,
    path = "/v1/auth/password-reset/request",
    tag = "auth",
    request_body(content = ResetRequest, content_type = "application/json"),
    responses((status = 202, description = "Accepted, whether or not the account exists", body = Accepted), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn request_reset(
    State(state): State<AppState>,
    client: Client,
    ApiJson(body): ApiJson<ResetRequest>,
) -> Result<(StatusCode, Json<Accepted>)> {
    state.auth.request_password_reset(&client, body).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            status: "if the account exists, an email is on its way",
        }),
    ))
}

/// `POST /v1/auth/password-reset/confirm`: sets the new password and ends every session.
#[utoipa::path(
    post,
    path = "/v1/auth/password-reset/confirm",
    tag = "auth",
    request_body(content = ResetConfirm, content_type = "application/json"),
    responses((status = 204, description = "Password set; every session ended"), (status = 401, description = "Invalid or expired token", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn confirm_reset(
    State(state): State<AppState>,
    client: Client,
    ApiJson(body): ApiJson<ResetConfirm>,
) -> Result<StatusCode> {
    state.auth.confirm_password_reset(&client, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/auth/verify-email/request` (authenticated): mails a verification link.
#[utoipa::path(
    post,
    path = "/v1/auth/verify-email/request",
    tag = "auth",
    responses((status = 202, description = "Accepted", body = Accepted), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub(crate) async fn request_verification(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<(StatusCode, Json<Accepted>)> {
    state.auth.request_email_verification(&principal).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            status: "if the address is unverified, an email is on its way",
        }),
    ))
}

/// `POST /v1/auth/verify-email/confirm`: marks the address verified.
#[utoipa::path(
    post,
    path = "/v1/auth/verify-email/confirm",
    tag = "auth",
    request_body(content = VerifyConfirm, content_type = "application/json"),
    responses((status = 204, description = "Address verified"), (status = 401, description = "Invalid or expired token", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn confirm_verification(
    State(state): State<AppState>,
    client: Client,
    ApiJson(body): ApiJson<VerifyConfirm>,
) -> Result<StatusCode> {
    state.auth.confirm_email_verification(&client, body).await?;
    Ok(StatusCode::NO_CONTENT)
}
