//! `/v1/invitations`: inviting teammates by email, and accepting (adapters over
//! tenantkit-auth's flows), listing and withdrawing pending invitations.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use tenantkit_auth::flows::{AcceptInvitation, InvitationCreated, InviteRequest, Joined};
use tenantkit_auth::routes::sign_in_response;
use tenantkit_core::{Invitation, InvitationId, Page, Permission, Principal, TenantScope};

use super::auth::no_store;
use crate::extract::{ApiId, ApiJson, Client, Listing, NoFilter, PageQuery};
use crate::{AppState, Result};

/// `POST /v1/invitations`: invites an address with a role; the token is answered once and
/// mailed. Only owners invite owners.
#[utoipa::path(
    post,
    path = "/v1/invitations",
    tag = "invitations",
    request_body(content = InviteRequest, content_type = "application/json"),
    responses((status = 201, description = "Invited; the token is shown once and mailed", body = InvitationCreated, headers(("Cache-Control" = String, description = "no-store"))), (status = 409, description = "Already a member", body = tenantkit_core::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub(crate) async fn invite(
    State(state): State<AppState>,
    client: Client,
    principal: Principal,
    ApiJson(body): ApiJson<InviteRequest>,
) -> Result<impl IntoResponse> {
    let created = state.auth.invite(&client, &principal, body).await?;
    Ok((StatusCode::CREATED, no_store(), Json(created)))
}

/// `POST /v1/invitations/accept`: joins the tenant. A new address creates its account (with
/// `password`); an existing account must send its own bearer token, for the invited address.
#[utoipa::path(
    post,
    path = "/v1/invitations/accept",
    tag = "invitations",
    request_body(content = AcceptInvitation, content_type = "application/json"),
    responses((status = 200, description = "Joined; signed in to the tenant", body = Joined, headers(("Cache-Control" = String, description = "no-store"))), (status = 403, description = "Joined, but the tenant requires a second factor: mfa_enrollment_required with an mfa_token (enroll at /v1/auth/mfa/enroll)", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 401, description = "Invalid, used, revoked or expired invitation; or insufficient_user_authentication (an existing account's session without the second factor it has or the tenant requires)", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json")),
    security((), ("bearer" = []))
)]
pub(crate) async fn accept(
    State(state): State<AppState>,
    client: Client,
    caller: Option<Principal>,
    ApiJson(body): ApiJson<AcceptInvitation>,
) -> Result<impl IntoResponse> {
    let joined = state
        .auth
        .accept_invitation(&client, caller.as_ref(), body)
        .await?;
    Ok(sign_in_response(joined))
}

/// `GET /v1/invitations`: pending invitations (never their tokens).
#[utoipa::path(
    get,
    path = "/v1/invitations",
    tag = "invitations",
    params(PageQuery),
    responses((status = 200, description = "Pending invitations (never their tokens)", body = Page<Invitation>)),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: Listing<NoFilter>,
) -> Result<Json<Page<Invitation>>> {
    principal.require(Permission::ManageMembers)?;
    let mut tx = state.db.begin_read(&TenantScope::of(&principal)).await?;
    let pending = tx.pending_invitations(query.page).await?;
    tx.commit().await?;
    Ok(Json(pending))
}

/// `DELETE /v1/invitations/{id}`: withdraws a pending invitation.
#[utoipa::path(
    delete,
    path = "/v1/invitations/{id}",
    tag = "invitations",
    params(("id" = uuid::Uuid, Path, description = "The invitation")),
    responses((status = 204, description = "Revoked")),
    security(("bearer" = []))
)]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    client: Client,
    principal: Principal,
    ApiId(id): ApiId<InvitationId>,
) -> Result<StatusCode> {
    principal.require(Permission::ManageMembers)?;
    let mut tx = state.db.begin(&TenantScope::of(&principal)).await?;
    tx.revoke_invitation(id).await?;
    let event = client
        .event("invitation.revoked", Some(principal.user_id()))
        .target("invitation", id);
    tx.audit(event).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
