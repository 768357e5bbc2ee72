//! `/v1/invitations`: inviting teammates by email, and accepting.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tenantkit_auth::{Message, OneTimeToken, Password};
use tenantkit_core::{
    now, Email, Error, ErrorCode, Invitation, NewUser, Page, Permission, Principal, Problem, Role,
    TenantId, TenantScope,
};

use super::auth::{target, TokenPair};
use crate::extract::{ApiJson, ClientInfo, MaybePrincipal};
use crate::{AppState, Result};

const INVITATION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub(crate) struct InviteRequest {
    email: String,
    role: Role,
}

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
    client: ClientInfo,
    principal: Principal,
    ApiJson(body): ApiJson<InviteRequest>,
) -> Result<impl IntoResponse> {
    principal.require(Permission::ManageMembers)?;
    if body.role == Role::Owner && principal.role() != Role::Owner {
        return Err(Error::Forbidden.into());
    }
    let email = Email::parse(&body.email)?;
    // Looked up before the write transaction: never hold one connection while taking another.
    let existing = state.db.find_user_by_email(&email).await?;
    let mut tx = state.db.begin(&TenantScope::of(&principal)).await?;
    // The inviter's rights as stored now, not as their access token remembers them.
    let inviter_role = tx
        .member(principal.user_id())
        .await?
        .map(|m| m.role)
        .ok_or(Error::Forbidden)?;
    if !inviter_role.allows(Permission::ManageMembers)
        || (body.role == Role::Owner && inviter_role != Role::Owner)
    {
        return Err(Error::Forbidden.into());
    }
    if let Some(existing) = existing {
        if tx.member(existing.id).await?.is_some() {
            return Err(Error::Conflict("that address is already a member".into()).into());
        }
    }
    let token = OneTimeToken::generate();
    let invitation = tx
        .create_invitation(
            email,
            body.role,
            principal.user_id(),
            &token.hash(),
            now() + INVITATION_TTL,
        )
        .await?;
    let mut event = target(
        client.event("invitation.created", Some(principal.user_id())),
        "invitation",
        invitation.id,
    );
    event.details = json!({ "email": invitation.email, "role": invitation.role });
    tx.audit(event).await?;
    let tenant = tx.tenant().await?;
    tx.commit().await?;
    let message = Message {
        to: invitation.email.to_string(),
        subject: format!("You are invited to {}", tenant.name),
        body: format!(
            "You were invited to join {} as {}. Accept within 7 days:\n\n{}/accept-invitation?token={}\n",
            tenant.name,
            invitation.role,
            state.public_url,
            token.expose()
        ),
    };
    state.send_mail_in_background(message);
    let body = InvitationCreated {
        id: invitation.id,
        token: token.expose().to_owned(),
        email: invitation.email,
        role: invitation.role,
        expires_at: invitation.expires_at,
    };
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(body),
    ))
}

/// A new invitation, with its token: shown this once (and mailed), stored only hashed.
// No `Debug`: it holds a live token.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct InvitationCreated {
    /// The invitation's id, to revoke it.
    id: uuid::Uuid,
    /// The single-use token the invitee accepts with.
    token: String,
    /// Who may accept it.
    email: Email,
    /// The role it grants.
    role: Role,
    /// When it stops working.
    #[serde(with = "time::serde::rfc3339")]
    expires_at: time::OffsetDateTime,
}

/// Tokens for the tenant just joined, flat like every token response.
// No `Debug`: it holds live tokens.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AcceptResponse {
    #[serde(flatten)]
    tokens: TokenPair,
    /// The tenant joined.
    tenant_id: TenantId,
    /// The role held there.
    role: Role,
}

// No `Debug`: it holds a live token and a password.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub(crate) struct AcceptRequest {
    token: String,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Password)]
    password: Option<Password>,
}

/// `POST /v1/invitations/accept`: joins the tenant. A new address creates its account (with
/// `password`); an existing account must send its own bearer token, for the invited address.
#[utoipa::path(
    post,
    path = "/v1/invitations/accept",
    tag = "invitations",
    request_body(content = AcceptRequest, content_type = "application/json"),
    responses((status = 200, description = "Joined; signed in to the tenant", body = AcceptResponse, headers(("Cache-Control" = String, description = "no-store"))), (status = 401, description = "Invalid, used, revoked or expired invitation", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json")),
    security((), ("bearer" = []))
)]
pub(crate) async fn accept(
    State(state): State<AppState>,
    client: ClientInfo,
    MaybePrincipal(caller): MaybePrincipal,
    ApiJson(body): ApiJson<AcceptRequest>,
) -> Result<impl IntoResponse> {
    state.limits.check_ip(client.ip)?;
    let token = OneTimeToken::new(body.token);
    let invalid = || Error::invalid("token", "is invalid, expired or already used");
    let invitation = state
        .db
        .find_open_invitation(&token.hash(), now())
        .await?
        .ok_or_else(invalid)?;
    let existing = state.db.find_user_by_email(&invitation.email).await?;
    let new_password = match (&caller, &existing) {
        (Some(caller), Some(account)) if caller.user_id() == account.id => {
            // No new session from the token of a revoked one.
            state.require_live_session(caller).await?;
            None
        }
        // Signed in as someone else: this invitation is not theirs.
        (Some(_), _) => return Err(Error::Forbidden.into()),
        // The address has an account: only that account may accept.
        (None, Some(_)) => {
            let problem = Problem::new(
                ErrorCode::Unauthenticated,
                "This address has an account; log in and accept with its access token.",
            );
            return Err(problem);
        }
        (None, None) => {
            let password = body
                .password
                .ok_or_else(|| Error::invalid("password", "is required for a new account"))?;
            Some(state.passwords.hash_new(&password, "password").await?)
        }
    };
    // The tenant comes from the stored invitation, which the token proved.
    let mut tx = state
        .db
        .begin(&TenantScope::for_system(invitation.tenant_id))
        .await?;
    if !tx.accept_invitation(invitation.id, now()).await? {
        return Err(invalid().into());
    }
    // The invitation is only as good as its sender's rights are now: a demoted or removed
    // admin's pending invitations die with their rights.
    let inviter_role = match invitation.invited_by {
        Some(inviter) => tx.member(inviter).await?.map(|m| m.role),
        None => None,
    };
    let still_allowed = inviter_role.is_some_and(|role| {
        role.allows(Permission::ManageMembers)
            && (invitation.role != Role::Owner || role == Role::Owner)
    });
    if !still_allowed {
        return Err(invalid().into());
    }
    let user = match (existing, new_password) {
        (Some(account), _) => account,
        (None, hash) => {
            tx.create_user(NewUser {
                email: invitation.email.clone(),
                password_hash: hash,
            })
            .await?
        }
    };
    tx.add_member(user.id, invitation.role).await?;
    let event = target(
        client.event("invitation.accepted", Some(user.id)),
        "invitation",
        invitation.id,
    );
    tx.audit(event).await?;
    tx.commit().await?;
    // Holding the token proves nothing about the mailbox (the inviter saw it too): a new
    // account starts unverified and gets a verification email.
    if user.email_verified_at.is_none() {
        if let Err(problem) = state
            .mail_token(&user, tenantkit_core::TokenPurpose::EmailVerification)
            .await
        {
            tracing::warn!(code = %problem.code, "could not queue the verification email");
        }
    }
    let (session, refresh) = state.sessions.start(user.id, invitation.tenant_id).await?;
    let tokens = state.token_pair(&session, invitation.role, &refresh)?;
    let body = AcceptResponse {
        tokens,
        tenant_id: invitation.tenant_id,
        role: invitation.role,
    };
    Ok((
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(body),
    ))
}

/// `GET /v1/invitations`: pending invitations (never their tokens).
#[utoipa::path(
    get,
    path = "/v1/invitations",
    tag = "invitations",
    params(super::docs::PageParams),
    responses((status = 200, description = "Pending invitations (never their tokens)", body = Page<Invitation>)),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: crate::extract::RawQuery,
) -> Result<Json<tenantkit_core::Page<tenantkit_core::Invitation>>> {
    principal.require(Permission::ManageMembers)?;
    let mut errors = Vec::new();
    let page = super::page_request(&query, &[], &mut errors);
    super::valid(errors)?;
    let mut tx = state.db.begin_read(&TenantScope::of(&principal)).await?;
    let pending = tx.pending_invitations(page).await?;
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
    client: ClientInfo,
    principal: Principal,
    crate::extract::ApiId(id): crate::extract::ApiId<uuid::Uuid>,
) -> Result<StatusCode> {
    principal.require(Permission::ManageMembers)?;
    let mut tx = state.db.begin(&TenantScope::of(&principal)).await?;
    tx.revoke_invitation(id).await?;
    tx.audit(target(
        client.event("invitation.revoked", Some(principal.user_id())),
        "invitation",
        id,
    ))
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
