//! `/v1/auth/*` and `/v1/me`: signup, login, refresh, logout and logout-all are
//! tenantkit-auth's own routes (`tenantkit_auth::routes`), mounted here with this document's
//! entries; the rest are adapters over its flows (parse, call one flow, answer).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use tenantkit_auth::flows::{
    ChangePassword, EnrolledSignIn, LoggedIn, LoginRequest, MfaVerify, PendingConfirmation,
    PendingEnrollment, RecoveryCodes, SecondFactor, SignedUp, SignupRequest, SwitchTenant,
    TokenPair, TotpCode, TotpEnrollment,
};
use tenantkit_auth::routes::{AuthRoutes, CheckEmail, RefreshRequest};
use tenantkit_core::{Error, Membership, Principal, Role, Tenant, User};
use utoipa_axum::router::UtoipaMethodRouter;
use utoipa_axum::routes;

use crate::extract::{ApiJson, Client};
use crate::{AppState, Result};

/// Token responses must never be cached (RFC 6749 §5.1).
pub(crate) fn no_store() -> [(header::HeaderName, &'static str); 1] {
    [(header::CACHE_CONTROL, "no-store")]
}

/// The library's routes with this document's entries: signup, login, refresh, logout and
/// logout-all (which verifies its caller with the layer `routes` were given, the same as the
/// other protected routes).
pub(crate) fn library_routes(routes: &AuthRoutes) -> [UtoipaMethodRouter<AppState>; 10] {
    let with = |(schemas, paths, _): UtoipaMethodRouter<AppState>, route| (schemas, paths, route);
    [
        with(routes!(signup), routes.signup()),
        with(routes!(login), routes.login()),
        with(routes!(refresh), routes.refresh()),
        with(routes!(logout), routes.logout()),
        with(routes!(logout_all), routes.logout_all()),
        with(routes!(mfa_verify), routes.mfa_verify()),
        with(routes!(mfa_enroll), routes.mfa_enroll()),
        with(routes!(mfa_enroll_confirm), routes.mfa_enroll_confirm()),
        with(routes!(totp_enroll, totp_disable), routes.mfa_totp()),
        with(routes!(totp_confirm), routes.mfa_totp_confirm()),
    ]
}

// The document's entries of the library's routes: `library_routes` mounts tenantkit-auth's
// handlers in their place (same bodies, statuses and `Cache-Control: no-store`).

/// `POST /v1/auth/signup`: a new tenant with the new user as its owner, signed in.
#[utoipa::path(
    post,
    path = "/v1/auth/signup",
    tag = "auth",
    request_body(content = SignupRequest, content_type = "application/json"),
    responses((status = 201, description = "Tenant and owner created, signed in", body = SignedUp, headers(("Cache-Control" = String, description = "no-store"))), (status = 202, description = "TENANTKIT_SIGNUP_MODE=verify-first: the same answer for a new and a registered address; the rest is in the mailbox", body = CheckEmail), (status = 409, description = "The slug is taken, or (open mode) the email", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json"))
)]
async fn signup() -> StatusCode {
    StatusCode::NOT_FOUND
}

/// `POST /v1/auth/login`.
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    tag = "auth",
    request_body(content = LoginRequest, content_type = "application/json"),
    responses((status = 200, description = "Signed in", body = LoggedIn, headers(("Cache-Control" = String, description = "no-store"))), (status = 401, description = "Wrong email, password or tenant (one answer for all: invalid_credentials); or mfa_required with an mfa_token (the password is right and a second factor is on: continue at /v1/auth/mfa/verify)", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 403, description = "mfa_enrollment_required with an mfa_token: the tenant requires a second factor the account lacks (enroll at /v1/auth/mfa/enroll)", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json"))
)]
async fn login() -> StatusCode {
    StatusCode::NOT_FOUND
}

/// `POST /v1/auth/refresh`: rotates the refresh token. The role is re-read, so a role change
/// or a removed membership takes effect at the next refresh.
#[utoipa::path(
    post,
    path = "/v1/auth/refresh",
    tag = "auth",
    request_body(content = RefreshRequest, content_type = "application/json"),
    responses((status = 200, description = "A new token pair; the old refresh token is spent", body = TokenPair, headers(("Cache-Control" = String, description = "no-store"))), (status = 401, description = "Invalid, expired, revoked or reused refresh token", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json"))
)]
async fn refresh() -> StatusCode {
    StatusCode::NOT_FOUND
}

/// `POST /v1/auth/logout`: ends the session of the refresh token. Always 204, so it reveals
/// nothing about the token.
#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    tag = "auth",
    request_body(content = RefreshRequest, content_type = "application/json"),
    responses((status = 204, description = "The session is over"), (status = 401, description = "Invalid refresh token", body = tenantkit_core::Problem, content_type = "application/problem+json"))
)]
async fn logout() -> StatusCode {
    StatusCode::NOT_FOUND
}

/// `POST /v1/auth/logout-all`: ends every session of the caller.
#[utoipa::path(
    post,
    path = "/v1/auth/logout-all",
    tag = "auth",
    responses((status = 204, description = "Every session of the user is over")),
    security(("bearer" = []))
)]
async fn logout_all() -> StatusCode {
    StatusCode::NOT_FOUND
}

/// `POST /v1/auth/mfa/verify`: the second step of a sign-in that answered `mfa_required`.
#[utoipa::path(
    post,
    path = "/v1/auth/mfa/verify",
    tag = "auth",
    request_body(content = MfaVerify, content_type = "application/json"),
    responses((status = 200, description = "Signed in; the tokens' amr include otp", body = LoggedIn, headers(("Cache-Control" = String, description = "no-store"))), (status = 401, description = "Unknown, used or expired mfa_token (invalid_token), or a wrong, expired or used code (invalid_credentials)", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 422, description = "Not exactly one of code and recovery_code", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json"))
)]
async fn mfa_verify() -> StatusCode {
    StatusCode::NOT_FOUND
}

/// `POST /v1/auth/mfa/enroll`: a new authenticator seed for the account of a sign-in that
/// answered `mfa_enrollment_required` (shown once).
#[utoipa::path(
    post,
    path = "/v1/auth/mfa/enroll",
    tag = "auth",
    request_body(content = PendingEnrollment, content_type = "application/json"),
    responses((status = 201, description = "The seed, in base32 and as an otpauth URI", body = TotpEnrollment, headers(("Cache-Control" = String, description = "no-store"))), (status = 401, description = "Unknown, used or expired mfa_token, or one that is not for enrolling (invalid_token)", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 409, description = "A second factor is already on", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json"))
)]
async fn mfa_enroll() -> StatusCode {
    StatusCode::NOT_FOUND
}

/// `POST /v1/auth/mfa/enroll/confirm`: a first code turns the second factor on and completes
/// the sign-in that answered `mfa_enrollment_required`.
#[utoipa::path(
    post,
    path = "/v1/auth/mfa/enroll/confirm",
    tag = "auth",
    request_body(content = PendingConfirmation, content_type = "application/json"),
    responses((status = 200, description = "Signed in (amr include otp), with ten single-use recovery codes shown once", body = EnrolledSignIn, headers(("Cache-Control" = String, description = "no-store"))), (status = 401, description = "Unknown, used or expired mfa_token (invalid_token), or a wrong code (invalid_credentials)", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 409, description = "No enrollment waits for confirmation", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json"))
)]
async fn mfa_enroll_confirm() -> StatusCode {
    StatusCode::NOT_FOUND
}

/// `POST /v1/auth/mfa/totp`: a new authenticator seed for the caller (shown once); it takes
/// effect when confirmed.
#[utoipa::path(
    post,
    path = "/v1/auth/mfa/totp",
    tag = "auth",
    responses((status = 201, description = "The seed, in base32 and as an otpauth URI", body = TotpEnrollment, headers(("Cache-Control" = String, description = "no-store"))), (status = 401, description = "No valid access token", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 409, description = "A second factor is already on", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
async fn totp_enroll() -> StatusCode {
    StatusCode::NOT_FOUND
}

/// `POST /v1/auth/mfa/totp/confirm`: turns the second factor on with a first code.
#[utoipa::path(
    post,
    path = "/v1/auth/mfa/totp/confirm",
    tag = "auth",
    request_body(content = TotpCode, content_type = "application/json"),
    responses((status = 200, description = "On; ten single-use recovery codes, shown once", body = RecoveryCodes, headers(("Cache-Control" = String, description = "no-store"))), (status = 401, description = "Wrong or used code", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 409, description = "No enrollment waits for confirmation", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
async fn totp_confirm() -> StatusCode {
    StatusCode::NOT_FOUND
}

/// `DELETE /v1/auth/mfa/totp`: turns the second factor off, with a current code or a recovery
/// code.
#[utoipa::path(
    delete,
    path = "/v1/auth/mfa/totp",
    tag = "auth",
    request_body(content = SecondFactor, content_type = "application/json"),
    responses((status = 204, description = "Off: seed and recovery codes deleted"), (status = 401, description = "Wrong or used code", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 404, description = "No second factor is on", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 422, description = "Not exactly one of code and recovery_code", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
async fn totp_disable() -> StatusCode {
    StatusCode::NOT_FOUND
}

/// The caller: user, tenant, role and every membership.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Me {
    user: User,
    tenant: Tenant,
    role: Role,
    memberships: Vec<Membership>,
}

/// `GET /v1/me`.
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "auth",
    responses((status = 200, description = "The caller", body = Me)),
    security(("bearer" = []))
)]
pub(crate) async fn me(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<impl IntoResponse> {
    let db = &state.db;
    let user = db
        .find_user(principal.user_id())
        .await?
        .ok_or(Error::NotFound)?;
    let tenant = db
        .find_tenant(principal.tenant_id())
        .await?
        .ok_or(Error::NotFound)?;
    let memberships = db.memberships_of(user.id).await?;
    Ok(Json(Me {
        user,
        tenant,
        role: principal.role(),
        memberships,
    }))
}

/// `POST /v1/auth/switch-tenant`: a new session in another tenant the caller belongs to.
/// A tenant the caller is not a member of answers exactly like one that does not exist.
#[utoipa::path(
    post,
    path = "/v1/auth/switch-tenant",
    tag = "auth",
    request_body(content = SwitchTenant, content_type = "application/json"),
    responses((status = 200, description = "Tokens for the other tenant", body = TokenPair, headers(("Cache-Control" = String, description = "no-store")))),
    security(("bearer" = []))
)]
pub(crate) async fn switch_tenant(
    State(state): State<AppState>,
    client: Client,
    principal: Principal,
    ApiJson(body): ApiJson<SwitchTenant>,
) -> Result<impl IntoResponse> {
    let tokens = state.auth.switch_tenant(&client, &principal, body).await?;
    Ok((no_store(), Json(tokens)))
}

/// `POST /v1/auth/password`: checks the current password, stores the new one, and revokes
/// every other session of the user (the calling session stays signed in).
#[utoipa::path(
    post,
    path = "/v1/auth/password",
    tag = "auth",
    request_body(content = ChangePassword, content_type = "application/json"),
    responses((status = 204, description = "Changed; other sessions revoked"), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub(crate) async fn change_password(
    State(state): State<AppState>,
    client: Client,
    principal: Principal,
    ApiJson(body): ApiJson<ChangePassword>,
) -> Result<StatusCode> {
    state
        .auth
        .change_password(&client, &principal, body)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
