//! Signing in and out: signup, login, refresh, logout, logout everywhere, tenant switch.

use serde::{Deserialize, Serialize};
use tenantkit_core::{
    ClientInfo, Email, Error as CoreError, FieldError, Membership, NewTenant, NewUser, Principal,
    Role, Slug, Tenant, TenantId, User,
};

use super::{AuthFlows, SignIn, SignInVia, TokenPair, event};
use crate::store::TokenPurpose;
use crate::{Attempt, AuthMethods, Error, Password, RefreshToken, Result};

/// A new tenant with the new user as its owner.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignupRequest {
    /// The owner's email address.
    pub email: String,
    /// The owner's password (12 to 1024 bytes, not a common one).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Password))]
    pub password: Password,
    /// The tenant's display name.
    pub tenant_name: String,
    /// The tenant's URL handle; derived from the name when absent.
    #[serde(default)]
    pub tenant_slug: Option<String>,
}

/// The answer to a signup: tokens, the user and the tenant.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignedUp {
    /// The owner's token pair.
    #[serde(flatten)]
    pub tokens: TokenPair,
    /// The new account.
    pub user: User,
    /// The new tenant.
    pub tenant: Tenant,
}

/// What a signup did.
#[derive(Debug)]
pub enum SignupOutcome {
    /// [`super::SignupMode::Open`]: the tenant and its owner exist, signed in.
    SignedIn(Box<SignedUp>),
    /// [`super::SignupMode::VerifyFirst`]: the same answer for a new and a registered address;
    /// what happens next is in the mailbox.
    CheckEmail,
}

/// Email and password, optionally for one tenant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginRequest {
    /// The account's email address.
    pub email: String,
    /// Its password.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Password))]
    pub password: Password,
    /// A tenant slug or id; the user's first tenant when absent.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// The answer to a login: tokens for the chosen tenant and every membership of the user.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoggedIn {
    /// The token pair.
    #[serde(flatten)]
    pub tokens: TokenPair,
    /// Every tenant the user belongs to, with the role there.
    pub memberships: Vec<Membership>,
}

/// The tenant to switch to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SwitchTenant {
    /// A tenant the caller is a member of.
    pub tenant_id: String,
}

fn collect<T>(result: tenantkit_core::Result<T>, errors: &mut Vec<FieldError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(CoreError::Validation(more)) => {
            errors.extend(more);
            None
        }
        Err(_) => None,
    }
}

impl AuthFlows {
    /// Signup: creates a tenant with the new user as its owner, in one transaction with its
    /// audit entry, and mails a verification link. In [`super::SignupMode::Open`] the owner
    /// is signed in at once; in [`super::SignupMode::VerifyFirst`] a registered address is
    /// answered exactly like a new one (its owner gets a notice instead of a second account).
    ///
    /// # Errors
    /// [`Error::RateLimited`]; `validation_failed` naming every bad field; `conflict` when the
    /// chosen slug is taken, or (open mode only) the email.
    #[tracing::instrument(skip_all)]
    pub async fn signup(
        &self,
        client: &ClientInfo,
        request: SignupRequest,
    ) -> Result<SignupOutcome> {
        self.limits.check(Attempt::Signup, client.ip).await?;
        let mut errors: Vec<FieldError> = Vec::new();
        let email = collect(Email::parse(&request.email), &mut errors);
        let slug = request
            .tenant_slug
            .as_deref()
            .and_then(|s| collect(Slug::parse(s), &mut errors));
        if let Err(Error::WeakPassword(more)) =
            self.passwords.policy().check(&request.password, "password")
        {
            errors.extend(more);
        }
        if request.tenant_name.trim().is_empty() {
            errors.push(FieldError::new("tenant_name", "must not be empty"));
        }
        let (Some(email), true) = (email, errors.is_empty()) else {
            return Err(CoreError::Validation(errors).into());
        };
        let verify_first = self.signup_mode == super::SignupMode::VerifyFirst;
        if verify_first {
            // A taken slug is refused before the address is looked at, so the answer never
            // depends on whether the address is registered.
            if let Some(slug) = &slug
                && self.db.find_tenant_by_slug(slug).await?.is_some()
            {
                return Err(CoreError::Conflict("this tenant slug is already taken".into()).into());
            }
            if let Some(existing) = self.db.find_user_by_email(&email).await? {
                // The same work as a real signup (one password hash), then a notice to the
                // owner of the address rather than an answer to the caller.
                let _ = self.passwords.hash(&request.password).await?;
                self.notify_signup_attempt(&existing).await;
                return Ok(SignupOutcome::CheckEmail);
            }
        }
        let hash = self.passwords.hash(&request.password).await?;
        // Tenant, owner, membership and audit entry commit together or not at all.
        let (tenant, mut tx) = self
            .db
            .create_tenant(NewTenant {
                name: request.tenant_name,
                slug,
            })
            .await?;
        let created = tx
            .create_user(NewUser {
                email,
                password_hash: Some(hash),
            })
            .await;
        let user = match created {
            // Registered between the look-up and now: the same answer as above.
            Err(CoreError::Conflict(_)) if verify_first => return Ok(SignupOutcome::CheckEmail),
            other => other?,
        };
        let membership = tx.add_member(user.id, Role::Owner).await?;
        tx.audit(event(client, "auth.signup", Some(user.id), "user", user.id))
            .await?;
        tx.commit().await?;
        tracing::info!(user = %user.id, tenant = %tenant.id, "signup");
        self.offer_verification(&user).await;
        if verify_first {
            return Ok(SignupOutcome::CheckEmail);
        }
        // The new owner proved the password they just chose.
        let signed_in = self
            .complete_sign_in(
                client,
                &user,
                &membership,
                AuthMethods::password(),
                None,
                SignInVia::Signup,
            )
            .await?;
        let signed_up = signed_in.into_complete()?;
        Ok(SignupOutcome::SignedIn(Box::new(SignedUp {
            tokens: signed_up.tokens,
            user,
            tenant,
        })))
    }

    /// Tells the owner of a registered address that someone tried to sign up with it (at
    /// most a few times an hour per account: never a mail cannon).
    async fn notify_signup_attempt(&self, user: &User) {
        if self
            .limits
            .check_account_action("signup_notice", user.id)
            .await
            .is_err()
        {
            return;
        }
        self.send_in_background(crate::Message {
            to: user.email.to_string(),
            subject: "Someone tried to sign up with your address".to_owned(),
            body: format!(
                "Someone tried to create an account with this address, which already has one.\n\n\
                 If it was you, sign in instead, or reset your password at {}/forgot-password.\n\
                 If not, you can ignore this email: nothing was changed.\n",
                self.public_url
            ),
        });
    }

    /// Login: [`AuthFlows::check_credentials`] (the password, checked at the same cost for an
    /// unknown email, rehashed when the parameters changed, and the tenant), then
    /// [`AuthFlows::complete_sign_in`] (the session, its tokens, `auth.login` in the audit log).
    /// For an account with a second factor on, the answer is [`SignIn::MfaRequired`]: no
    /// session yet, and its token continues at [`AuthFlows::mfa_verify`].
    ///
    /// # Errors
    /// As [`AuthFlows::check_credentials`]: [`Error::RateLimited`] (per client network; for a
    /// network whose failure budget against the account is spent; for a network that failed
    /// against an account past its account-wide ceiling, never for one that has not);
    /// [`Error::InvalidCredentials`] for a wrong email, password or tenant alike (and for a
    /// password changed while it was being checked).
    #[tracing::instrument(skip_all)]
    pub async fn login(
        &self,
        client: &ClientInfo,
        request: LoginRequest,
    ) -> Result<SignIn<LoggedIn>> {
        let checked = self.check_credentials(client, &request).await?;
        let signed_in = match self
            .complete_sign_in(
                client,
                &checked.user,
                &checked.membership,
                checked.amr,
                None,
                SignInVia::Login,
            )
            .await
        {
            // Under the epoch read before the (slow) password check: a reset or "log out
            // everywhere" that happened meanwhile leaves no session behind.
            Err(Error::CredentialsChanged) => return Err(Error::InvalidCredentials),
            other => other?,
        };
        Ok(signed_in.map(|done| LoggedIn {
            tokens: done.tokens,
            memberships: checked.memberships,
        }))
    }

    /// Refresh: rotates the refresh token. The role is read again, so a role change or a
    /// removed membership takes effect at the next refresh.
    ///
    /// # Errors
    /// [`Error::RateLimited`]; [`Error::InvalidToken`] for an unknown, expired or revoked
    /// token; [`Error::RefreshTokenReused`] for a replay (the session is revoked, and audited).
    #[tracing::instrument(skip_all)]
    pub async fn refresh(
        &self,
        client: &ClientInfo,
        presented: &RefreshToken,
    ) -> Result<TokenPair> {
        self.limits.check(Attempt::Refresh, client.ip).await?;
        let (session, next) = match self.sessions.refresh(presented).await {
            Ok(rotated) => rotated,
            Err(Error::RefreshTokenReused {
                session,
                user,
                tenant,
            }) => {
                let entry = event(
                    client,
                    "auth.refresh_reused",
                    Some(user),
                    "session",
                    session,
                );
                self.audit(tenant, entry).await?;
                return Err(Error::RefreshTokenReused {
                    session,
                    user,
                    tenant,
                });
            }
            Err(other) => return Err(other),
        };
        let Some(membership) = self
            .db
            .membership_of(session.user_id, session.tenant_id)
            .await?
        else {
            self.sessions.revoke(&next).await?;
            return Err(Error::InvalidToken("membership removed"));
        };
        self.token_pair(&session, membership.role, &next)
    }

    /// Logout: ends the session of the refresh token. An unknown token is not an error, so
    /// logout reveals nothing about tokens.
    ///
    /// # Errors
    /// Storage errors only.
    #[tracing::instrument(skip_all)]
    pub async fn logout(&self, client: &ClientInfo, presented: &RefreshToken) -> Result<()> {
        if let Some(session) = self.sessions.revoke(presented).await? {
            let entry = event(
                client,
                "auth.logout",
                Some(session.user_id),
                "session",
                session.id,
            );
            self.audit(session.tenant_id, entry).await?;
            tracing::info!(session = %session.id, user = %session.user_id, "logout");
        }
        Ok(())
    }

    /// Logout everywhere: ends every session of the caller; returns how many.
    ///
    /// # Errors
    /// Storage errors only.
    #[tracing::instrument(skip_all, fields(user = %principal.user_id()))]
    pub async fn logout_all(&self, client: &ClientInfo, principal: &Principal) -> Result<u64> {
        let user = principal.user_id();
        // One transaction: the epoch moves on (a login in flight cannot finish), every session
        // ends, and the audit entry is written, or none of it.
        let mut tx = self.db.begin_system().await?;
        tx.bump_credentials_epoch(user).await?;
        let scope = crate::RevocationScope::User {
            user,
            tenant: None,
            except: None,
        };
        let revoked = (self.sessions.revocations())
            .revoke_in(&mut tx, scope, "logout_all", self.sessions.now())
            .await?
            .len() as u64;
        let entry = event(client, "auth.logout_all", Some(user), "user", user)
            .details(serde_json::json!({ "sessions_revoked": revoked }));
        tx.audit_in(principal.tenant_id(), entry).await?;
        tx.commit().await?;
        tracing::info!(revoked, "logout everywhere");
        Ok(revoked)
    }

    /// Tenant switch: a new session in another tenant the caller belongs to, ending no later
    /// than the caller's session would. A tenant the caller is not a member of answers like
    /// one that does not exist.
    ///
    /// # Errors
    /// [`Error::InvalidToken`] when the caller's session is over; `not_found` for a tenant the
    /// caller is not in (or a malformed id).
    #[tracing::instrument(skip_all, fields(user = %principal.user_id()))]
    pub async fn switch_tenant(
        &self,
        client: &ClientInfo,
        principal: &Principal,
        request: SwitchTenant,
    ) -> Result<TokenPair> {
        // A new session must not be minted from the token of a revoked session.
        self.require_live_session(principal).await?;
        let tenant: TenantId = request.tenant_id.parse().map_err(|_| CoreError::NotFound)?;
        // Memberships of live tenants only: a deleted tenant is never entered.
        let membership = self
            .db
            .memberships_of(principal.user_id())
            .await?
            .into_iter()
            .find(|m| m.tenant_id == tenant)
            .ok_or(CoreError::NotFound)?;
        let parent = self
            .sessions
            .session(principal.session_id())
            .await?
            .ok_or(Error::InvalidToken("session is over"))?;
        let user = self.current_user(principal).await?;
        // Same user, epoch and sign-in methods; ends no later than the parent.
        let signed_in = self
            .complete_sign_in(
                client,
                &user,
                &membership,
                parent.amr.clone(),
                Some(&parent),
                SignInVia::TenantSwitch,
            )
            .await?;
        Ok(signed_in.into_complete()?.tokens)
    }

    /// Mails a new verification link to the caller, if their address is unverified.
    ///
    /// # Errors
    /// [`Error::RateLimited`]; storage errors.
    pub async fn request_email_verification(&self, principal: &Principal) -> Result<()> {
        self.limits
            .check_account_action("verification_mail", principal.user_id())
            .await?;
        let user = self.current_user(principal).await?;
        if user.email_verified_at.is_none() {
            self.mail_token(&user, TokenPurpose::EmailVerification)
                .await?;
        }
        Ok(())
    }
}
