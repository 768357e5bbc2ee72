//! Password reset and email verification: single-use, hashed, expiring tokens sent by email.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use tenantkit_auth::{Message, OneTimeToken, Password};
use tenantkit_core::{now, AuditEvent, Email, Error, Principal, TokenPurpose, User, UserId};

use super::auth::target;
use crate::extract::{ApiJson, ClientInfo};
use crate::{AppState, Result};

const RESET_TTL: Duration = Duration::from_secs(30 * 60);
const VERIFY_TTL: Duration = Duration::from_secs(48 * 3600);

impl AppState {
    /// Stores a new token for `user` and mails its link. Delivery runs in the background, so
    /// the response time does not depend on the mail server (or reveal the account).
    pub(crate) async fn mail_token(&self, user: &User, purpose: TokenPurpose) -> Result<()> {
        let token = OneTimeToken::generate();
        let (ttl, subject, path) = match purpose {
            TokenPurpose::PasswordReset => (RESET_TTL, "Reset your password", "reset-password"),
            TokenPurpose::EmailVerification => {
                (VERIFY_TTL, "Verify your email address", "verify-email")
            }
        };
        let at = now();
        self.db
            .create_user_token(user.id, purpose, &token.hash(), at, at + ttl)
            .await?;
        let message = Message {
            to: user.email.to_string(),
            subject: subject.to_owned(),
            body: format!(
                "Open this link within {} minutes:\n\n{}/{path}?token={}\n\nIf you did not ask for it, ignore this email.",
                ttl.as_secs() / 60,
                self.public_url,
                token.expose()
            ),
        };
        self.send_mail_in_background(message);
        Ok(())
    }
}

impl AppState {
    /// Records an account-wide event in every tenant the user belongs to.
    pub(crate) async fn audit_everywhere(
        &self,
        user: &UserId,
        event: impl Fn() -> AuditEvent,
    ) -> Result<()> {
        for membership in self.db.memberships_of(*user).await? {
            self.audit(membership.tenant_id, event()).await?;
        }
        Ok(())
    }
}

/// The answer to a request whose outcome must not be revealed (does the account exist?).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Accepted {
    /// What happens next.
    status: &'static str,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub(crate) struct ResetRequest {
    email: String,
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
    client: ClientInfo,
    ApiJson(body): ApiJson<ResetRequest>,
) -> Result<(StatusCode, Json<Accepted>)> {
    state.limits.check_ip(client.ip)?;
    state.limits.check_account(&body.email)?;
    let email = Email::parse(&body.email)?;
    // Everything that differs between a known and an unknown address (token, audit, mail)
    // happens after the answer, so neither body nor timing tells them apart.
    let client = client.clone();
    tokio::spawn(async move {
        let result = async {
            if let Some(user) = state.db.find_user_by_email(&email).await? {
                state.mail_token(&user, TokenPurpose::PasswordReset).await?;
                state
                    .audit_everywhere(&user.id, || {
                        target(
                            client.event("auth.password_reset_requested", None),
                            "user",
                            user.id,
                        )
                    })
                    .await?;
                tracing::info!(user = %user.id, "password reset requested");
            }
            Ok::<_, tenantkit_core::Problem>(())
        };
        if let Err(problem) = result.await {
            tracing::error!(code = %problem.code, "handling a password reset request failed");
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            status: "if the account exists, an email is on its way",
        }),
    ))
}

// No `Debug`: it holds a live token and a password.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub(crate) struct ResetConfirm {
    token: String,
    #[schema(value_type = String, format = Password)]
    new_password: Password,
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
    client: ClientInfo,
    ApiJson(body): ApiJson<ResetConfirm>,
) -> Result<StatusCode> {
    state.limits.check_ip(client.ip)?;
    // Check the new password before spending the token, so a weak choice can be corrected.
    state
        .passwords
        .policy()
        .check(&body.new_password, "new_password")?;
    // Hash first: a failure here must not spend the token.
    let hash = state.passwords.hash(&body.new_password).await?;
    let token = OneTimeToken::new(body.token);
    let user = state
        .db
        .consume_user_token(&token.hash(), TokenPurpose::PasswordReset, now())
        .await?
        .ok_or_else(|| Error::invalid("token", "is invalid, expired or already used"))?;
    state.db.set_password_hash(user, &hash).await?;
    let revoked = state.sessions.revoke_user(user, "password_reset").await?;
    state
        .audit_everywhere(&user, || {
            target(
                client.event("auth.password_reset", Some(user)),
                "user",
                user,
            )
        })
        .await?;
    tracing::info!(user = %user, revoked, "password reset; every session revoked");
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
    state
        .limits
        .check_account(&principal.user_id().to_string())?;
    let user = state
        .db
        .find_user(principal.user_id())
        .await?
        .ok_or(Error::NotFound)?;
    if user.email_verified_at.is_none() {
        state
            .mail_token(&user, TokenPurpose::EmailVerification)
            .await?;
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            status: "if the address is unverified, an email is on its way",
        }),
    ))
}

// No `Debug`: it holds a live token.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub(crate) struct VerifyConfirm {
    token: String,
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
    client: ClientInfo,
    ApiJson(body): ApiJson<VerifyConfirm>,
) -> Result<StatusCode> {
    state.limits.check_ip(client.ip)?;
    let token = OneTimeToken::new(body.token);
    let user = state
        .db
        .consume_user_token(&token.hash(), TokenPurpose::EmailVerification, now())
        .await?
        .ok_or_else(|| Error::invalid("token", "is invalid, expired or already used"))?;
    state.db.mark_email_verified(user, now()).await?;
    state
        .audit_everywhere(&user, || {
            target(
                client.event("auth.email_verified", Some(user)),
                "user",
                user,
            )
        })
        .await?;
    tracing::info!(user = %user, "email verified");
    Ok(StatusCode::NO_CONTENT)
}
