//! `/v1/auth/*` and `/v1/me`: signup, login, refresh, logout, and who am I.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use tenantkit_auth::{Error as AuthError, Password, RefreshToken, Verification};
use tenantkit_core::{
    AuditEvent, Email, Error, FieldError, Membership, NewTenant, NewUser, Principal, Role,
    SessionRecord, Slug, Tenant, TenantId, User,
};

use crate::extract::{ApiJson, ClientInfo};
use crate::{AppState, Result};

/// `{access_token, token_type, expires_in, refresh_token}`, flat beside any extra fields.
// No `Debug`: it holds live tokens.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct TokenPair {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    refresh_token: String,
}

impl AppState {
    /// A token pair for a session in which `user` acts as `role`.
    pub(crate) fn token_pair(
        &self,
        session: &SessionRecord,
        role: Role,
        refresh: &RefreshToken,
    ) -> Result<TokenPair> {
        let principal = Principal::new(
            session.user_id,
            session.tenant_id,
            role,
            Vec::<String>::new(),
            session.id,
        );
        let access = self.tokens.issue(&principal)?;
        Ok(TokenPair {
            access_token: access.token,
            token_type: "Bearer",
            expires_in: access.expires_in,
            refresh_token: refresh.expose().to_owned(),
        })
    }
}

/// Token responses must never be cached (RFC 6749 §5.1).
fn no_store() -> [(header::HeaderName, &'static str); 1] {
    [(header::CACHE_CONTROL, "no-store")]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub(crate) struct SignupRequest {
    email: String,
    #[schema(value_type = String, format = Password)]
    password: Password,
    tenant_name: String,
    #[serde(default)]
    tenant_slug: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct SignupResponse {
    #[serde(flatten)]
    tokens: TokenPair,
    user: User,
    tenant: Tenant,
}

/// `POST /v1/auth/signup`: a new tenant with the new user as its owner, logged in.
#[utoipa::path(
    post,
    path = "/v1/auth/signup",
    tag = "auth",
    request_body(content = SignupRequest, content_type = "application/json"),
    responses((status = 201, description = "Tenant and owner created, signed in", body = SignupResponse, headers(("Cache-Control" = String, description = "no-store"))), (status = 409, description = "The email or slug is taken", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn signup(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<SignupRequest>,
) -> Result<impl IntoResponse> {
    state.limits.check_ip(client.ip)?;
    let mut errors: Vec<FieldError> = Vec::new();
    let email = collect(Email::parse(&body.email), &mut errors);
    let slug = body
        .tenant_slug
        .as_deref()
        .and_then(|s| collect(Slug::parse(s), &mut errors));
    if let Err(AuthError::WeakPassword(more)) =
        state.passwords.policy().check(&body.password, "password")
    {
        errors.extend(more);
    }
    if body.tenant_name.trim().is_empty() {
        errors.push(FieldError::new("tenant_name", "must not be empty"));
    }
    let (Some(email), true) = (email, errors.is_empty()) else {
        return Err(Error::Validation(errors).into());
    };
    let hash = state.passwords.hash(&body.password).await?;
    // Tenant, owner and membership commit together or not at all.
    let (tenant, mut tx) = state
        .db
        .create_tenant(NewTenant {
            name: body.tenant_name,
            slug,
        })
        .await?;
    let user = tx
        .create_user(NewUser {
            email,
            password_hash: Some(hash),
        })
        .await?;
    tx.add_member(user.id, Role::Owner).await?;
    tx.audit(target(
        client.event("auth.signup", Some(user.id)),
        "user",
        user.id,
    ))
    .await?;
    tx.commit().await?;
    tracing::info!(user = %user.id, tenant = %tenant.id, "signup");
    // Best effort: the account works unverified, and a new link can be requested.
    if let Err(err) = state
        .mail_token(&user, tenantkit_core::TokenPurpose::EmailVerification)
        .await
    {
        tracing::warn!(error = ?err, "could not queue the verification email");
    }
    let (session, refresh) = state.sessions.start(user.id, tenant.id).await?;
    let tokens = state.token_pair(&session, Role::Owner, &refresh)?;
    Ok((
        StatusCode::CREATED,
        no_store(),
        Json(SignupResponse {
            tokens,
            user,
            tenant,
        }),
    ))
}

/// Names what an audit event is about.
pub(crate) fn target(mut event: AuditEvent, kind: &str, id: impl std::fmt::Display) -> AuditEvent {
    event.target_type = Some(kind.to_owned());
    event.target_id = Some(id.to_string());
    event
}

fn collect<T>(result: tenantkit_core::Result<T>, errors: &mut Vec<FieldError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(Error::Validation(more)) => {
            errors.extend(more);
            None
        }
        Err(_) => None,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub(crate) struct LoginRequest {
    email: String,
    #[schema(value_type = String, format = Password)]
    password: Password,
    /// A tenant slug or id; the user's first tenant when absent.
    #[serde(default)]
    tenant: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct LoginResponse {
    #[serde(flatten)]
    tokens: TokenPair,
    memberships: Vec<Membership>,
}

/// `POST /v1/auth/login`.
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    tag = "auth",
    request_body(content = LoginRequest, content_type = "application/json"),
    responses((status = 200, description = "Signed in", body = LoginResponse, headers(("Cache-Control" = String, description = "no-store"))), (status = 401, description = "Wrong email, password or tenant (one answer for all)", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<impl IntoResponse> {
    // Counted before any password work, successful or not.
    state.limits.check_ip(client.ip)?;
    state.limits.check_login(&body.email)?;
    let user = match Email::parse(&body.email) {
        Ok(email) => state.db.find_user_by_email(&email).await?,
        Err(_) => None,
    };
    // An unknown account costs a full verification against a dummy hash, and every failure
    // below answers the same, so neither timing nor message reveals which accounts exist.
    let stored = user.as_ref().and_then(|u| u.password_hash.as_ref());
    let verification = state.passwords.verify(&body.password, stored).await?;
    let needs_rehash = match (&user, verification) {
        (Some(_), Verification::Match { needs_rehash }) => needs_rehash,
        (Some(known), Verification::Mismatch) => {
            // A failed login against a real account is a security event for its tenants. It
            // is recorded in the background, so the answer takes as long as for an unknown
            // email (no enumeration by timing).
            let (background, user, client) = (state.clone(), known.id, client.clone());
            tokio::spawn(async move {
                let result = async {
                    for membership in background.db.memberships_of(user).await? {
                        let event = target(client.event("auth.login_failed", None), "user", user);
                        background.audit(membership.tenant_id, event).await?;
                    }
                    Ok::<_, tenantkit_core::Problem>(())
                };
                if let Err(problem) = result.await {
                    tracing::error!(code = %problem.code, "recording a failed login failed");
                }
            });
            tracing::info!("login failed");
            state.limits.record_login_failure(&body.email)?;
            return Err(AuthError::InvalidCredentials.into());
        }
        (None, _) => {
            tracing::info!("login failed");
            state.limits.record_login_failure(&body.email)?;
            return Err(AuthError::InvalidCredentials.into());
        }
    };
    let Some(user) = user else {
        return Err(AuthError::InvalidCredentials.into());
    };
    if needs_rehash {
        let upgraded = state.passwords.hash(&body.password).await?;
        state.db.set_password_hash(user.id, &upgraded).await?;
        tracing::info!(user = %user.id, "password rehashed with current parameters");
    }
    let memberships = state.db.memberships_of(user.id).await?;
    let chosen = match body.tenant.as_deref() {
        None => memberships.first().cloned(),
        Some(wanted) => {
            let tenant_id = match wanted.parse::<TenantId>() {
                Ok(id) => Some(id),
                Err(_) => match Slug::parse(wanted) {
                    Ok(slug) => state.db.find_tenant_by_slug(&slug).await?.map(|t| t.id),
                    Err(_) => None,
                },
            };
            memberships
                .iter()
                .find(|m| Some(m.tenant_id) == tenant_id)
                .cloned()
        }
    };
    let Some(membership) = chosen else {
        tracing::info!(user = %user.id, "login failed: no membership in the requested tenant");
        return Err(AuthError::InvalidCredentials.into());
    };
    let (session, refresh) = state.sessions.start(user.id, membership.tenant_id).await?;
    state
        .audit(
            membership.tenant_id,
            target(
                client.event("auth.login", Some(user.id)),
                "session",
                session.id,
            ),
        )
        .await?;
    tracing::info!(user = %user.id, tenant = %membership.tenant_id, session = %session.id, "login");
    let tokens = state.token_pair(&session, membership.role, &refresh)?;
    Ok((
        no_store(),
        Json(LoginResponse {
            tokens,
            memberships,
        }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub(crate) struct RefreshRequest {
    #[schema(value_type = String, format = Password)]
    refresh_token: RefreshToken,
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
pub(crate) async fn refresh(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<impl IntoResponse> {
    state.limits.check_ip(client.ip)?;
    let (session, next) = match state.sessions.refresh(&body.refresh_token).await {
        Ok(rotated) => rotated,
        Err(AuthError::RefreshTokenReused {
            session,
            user,
            tenant,
        }) => {
            let event = target(
                client.event("auth.refresh_reused", Some(user)),
                "session",
                session,
            );
            state.audit(tenant, event).await?;
            return Err(AuthError::RefreshTokenReused {
                session,
                user,
                tenant,
            }
            .into());
        }
        Err(other) => return Err(other.into()),
    };
    let Some(membership) = state
        .db
        .membership_of(session.user_id, session.tenant_id)
        .await?
    else {
        state.sessions.revoke(&next).await?;
        return Err(AuthError::InvalidToken("membership removed").into());
    };
    let tokens = state.token_pair(&session, membership.role, &next)?;
    Ok((no_store(), Json(tokens)))
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
pub(crate) async fn logout(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<StatusCode> {
    if let Some(session) = state.sessions.revoke(&body.refresh_token).await? {
        let event = target(
            client.event("auth.logout", Some(session.user_id)),
            "session",
            session.id,
        );
        state.audit(session.tenant_id, event).await?;
        tracing::info!(session = %session.id, user = %session.user_id, "logout");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/auth/logout-all`: ends every session of the caller.
#[utoipa::path(
    post,
    path = "/v1/auth/logout-all",
    tag = "auth",
    responses((status = 204, description = "Every session of the user is over")),
    security(("bearer" = []))
)]
pub(crate) async fn logout_all(
    State(state): State<AppState>,
    client: ClientInfo,
    principal: Principal,
) -> Result<StatusCode> {
    let revoked = state
        .sessions
        .revoke_user(principal.user_id(), "logout_all")
        .await?;
    let mut event = target(
        client.event("auth.logout_all", Some(principal.user_id())),
        "user",
        principal.user_id(),
    );
    event.details = serde_json::json!({ "sessions_revoked": revoked });
    state.audit(principal.tenant_id(), event).await?;
    tracing::info!(user = %principal.user_id(), revoked, "logout everywhere");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Me {
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
    let user = state
        .db
        .find_user(principal.user_id())
        .await?
        .ok_or(Error::NotFound)?;
    let tenant = state
        .db
        .find_tenant(principal.tenant_id())
        .await?
        .ok_or(Error::NotFound)?;
    let memberships = state.db.memberships_of(user.id).await?;
    Ok(Json(Me {
        user,
        tenant,
        role: principal.role(),
        memberships,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub(crate) struct SwitchTenantRequest {
    tenant_id: String,
}

/// `POST /v1/auth/switch-tenant`: a new session in another tenant the caller belongs to.
/// A tenant the caller is not a member of answers exactly like one that does not exist.
#[utoipa::path(
    post,
    path = "/v1/auth/switch-tenant",
    tag = "auth",
    request_body(content = SwitchTenantRequest, content_type = "application/json"),
    responses((status = 200, description = "Tokens for the other tenant", body = TokenPair, headers(("Cache-Control" = String, description = "no-store")))),
    security(("bearer" = []))
)]
pub(crate) async fn switch_tenant(
    State(state): State<AppState>,
    client: ClientInfo,
    principal: Principal,
    ApiJson(body): ApiJson<SwitchTenantRequest>,
) -> Result<impl IntoResponse> {
    // A new session must not be minted from the token of a revoked session.
    state.require_live_session(&principal).await?;
    let tenant: TenantId = body.tenant_id.parse().map_err(|_| Error::NotFound)?;
    let membership = state
        .db
        .membership_of(principal.user_id(), tenant)
        .await?
        .ok_or(Error::NotFound)?;
    // The new session ends when the one it came from would have.
    let parent = state
        .db
        .find_session(principal.session_id())
        .await?
        .map(|s| s.expires_at);
    let (session, refresh) = state
        .sessions
        .start_until(principal.user_id(), membership.tenant_id, parent)
        .await?;
    let event = target(
        client.event("auth.tenant_switched", Some(principal.user_id())),
        "session",
        session.id,
    );
    state.audit(membership.tenant_id, event).await?;
    tracing::info!(user = %principal.user_id(), tenant = %tenant, session = %session.id, "switched tenant");
    let tokens = state.token_pair(&session, membership.role, &refresh)?;
    Ok((no_store(), Json(tokens)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub(crate) struct ChangePasswordRequest {
    #[schema(value_type = String, format = Password)]
    current_password: Password,
    #[schema(value_type = String, format = Password)]
    new_password: Password,
}

/// `POST /v1/auth/password`: checks the current password, stores the new one, and revokes
/// every other session of the user (the calling session stays signed in).
#[utoipa::path(
    post,
    path = "/v1/auth/password",
    tag = "auth",
    request_body(content = ChangePasswordRequest, content_type = "application/json"),
    responses((status = 204, description = "Changed; other sessions revoked"), (status = 429, description = "Too many attempts; see Retry-After", body = tenantkit_core::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub(crate) async fn change_password(
    State(state): State<AppState>,
    client: ClientInfo,
    principal: Principal,
    ApiJson(body): ApiJson<ChangePasswordRequest>,
) -> Result<StatusCode> {
    // A stolen access token must not become an oracle for guessing the current password.
    state
        .limits
        .check_account(&principal.user_id().to_string())?;
    let user = state
        .db
        .find_user(principal.user_id())
        .await?
        .ok_or(Error::NotFound)?;
    let verification = state
        .passwords
        .verify(&body.current_password, user.password_hash.as_ref())
        .await?;
    if verification == Verification::Mismatch {
        return Err(Error::invalid("current_password", "is incorrect").into());
    }
    let hash = state
        .passwords
        .hash_new(&body.new_password, "new_password")
        .await?;
    state.db.set_password_hash(user.id, &hash).await?;
    let revoked = state
        .sessions
        .revoke_user_except(user.id, principal.session_id(), "password_changed")
        .await?;
    let mut event = target(
        client.event("auth.password_changed", Some(user.id)),
        "user",
        user.id,
    );
    event.details = serde_json::json!({ "sessions_revoked": revoked });
    state.audit(principal.tenant_id(), event).await?;
    tracing::info!(user = %user.id, revoked, "password changed; other sessions revoked");
    Ok(StatusCode::NO_CONTENT)
}
