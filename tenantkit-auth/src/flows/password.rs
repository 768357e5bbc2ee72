//! Passwords and mailed proofs: change, reset by email, email verification.

use serde::Deserialize;
use tenantkit_core::{ClientInfo, Email, Error as CoreError, Principal};

use super::{AuthFlows, event};
use crate::store::sessions::restamp;
use crate::store::{TokenPurpose, mail_tokens};
use crate::{Attempt, OneTimeToken, Password, Result, Verification};

/// The current password and the new one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangePassword {
    /// The password in use now.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Password))]
    pub current_password: Password,
    /// The new password (12 to 1024 bytes, not a common one).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Password))]
    pub new_password: Password,
}

/// Who forgot their password.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResetRequest {
    /// The account's email address.
    pub email: String,
}

/// The mailed reset token and the new password. Its `Debug` hides both.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResetConfirm {
    /// The token from the email.
    #[cfg_attr(feature = "openapi", schema(format = Password))]
    pub token: String,
    /// The new password.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Password))]
    pub new_password: Password,
}

impl std::fmt::Debug for ResetConfirm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResetConfirm(..)")
    }
}

/// The mailed verification token. Its `Debug` hides it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerifyConfirm {
    /// The token from the email.
    #[cfg_attr(feature = "openapi", schema(format = Password))]
    pub token: String,
}

impl std::fmt::Debug for VerifyConfirm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifyConfirm(..)")
    }
}

fn invalid_token() -> CoreError {
    CoreError::invalid("token", "is invalid, expired or already used")
}

impl AuthFlows {
    /// Password change: checks the current password, stores the new one and revokes every
    /// other session of the user (the calling session stays signed in).
    ///
    /// # Errors
    /// [`crate::Error::RateLimited`]; `validation_failed` on `current_password` when it is
    /// wrong, or on `new_password` when the policy refuses it.
    #[tracing::instrument(skip_all, fields(user = %principal.user_id()))]
    pub async fn change_password(
        &self,
        client: &ClientInfo,
        principal: &Principal,
        request: ChangePassword,
    ) -> Result<()> {
        // A stolen access token must not become an oracle for guessing the current password.
        self.limits
            .check_account_action("password_check", principal.user_id())
            .await?;
        let user = self.current_user(principal).await?;
        let verification = self
            .passwords
            .verify(&request.current_password, user.password_hash.as_ref())
            .await?;
        if verification == Verification::Mismatch {
            return Err(CoreError::invalid("current_password", "is incorrect").into());
        }
        let hash = self
            .passwords
            .hash_new(&request.new_password, "new_password")
            .await?;
        // One transaction: the new hash, the new epoch (stamped on the calling session, which
        // stays signed in), every other session ended, and the audit entry.
        let mut tx = self.db.begin_system().await?;
        tx.set_password_hash(user.id, &hash).await?;
        let epoch = tx.bump_credentials_epoch(user.id).await?;
        restamp(&mut tx, principal.session_id(), epoch).await?;
        let scope = crate::RevocationScope::User {
            user: user.id,
            tenant: None,
            except: Some(principal.session_id()),
        };
        let revoked = (self.sessions.revocations())
            .revoke_in(&mut tx, scope, "password_changed", self.sessions.now())
            .await?
            .len() as u64;
        let entry = event(
            client,
            "auth.password_changed",
            Some(user.id),
            "user",
            user.id,
        )
        .details(serde_json::json!({ "sessions_revoked": revoked }));
        tx.audit_in(principal.tenant_id(), entry).await?;
        tx.commit().await?;
        tracing::info!(revoked, "password changed; other sessions revoked");
        Ok(())
    }

    /// Password reset, step one: mails a reset link if the account exists. The answer is the
    /// same either way, and everything that differs between a known and an unknown address
    /// (token, audit, mail) happens after it, so neither body nor timing tells them apart.
    ///
    /// # Errors
    /// [`crate::Error::RateLimited`]; `validation_failed` for a malformed address.
    #[tracing::instrument(skip_all)]
    pub async fn request_password_reset(
        &self,
        client: &ClientInfo,
        request: ResetRequest,
    ) -> Result<()> {
        self.limits.check(Attempt::PasswordReset, client.ip).await?;
        self.limits.check_reset(&request.email).await?;
        let email = Email::parse(&request.email)?;
        let (flows, client) = (self.clone(), client.clone());
        tokio::spawn(async move {
            let result = async {
                if let Some(user) = flows.db.find_user_by_email(&email).await? {
                    flows.mail_token(&user, TokenPurpose::PasswordReset).await?;
                    let entry = || {
                        event(
                            &client,
                            "auth.password_reset_requested",
                            None,
                            "user",
                            user.id,
                        )
                    };
                    flows.audit_everywhere(user.id, entry).await?;
                    tracing::info!(user = %user.id, "password reset requested");
                }
                Ok::<_, crate::Error>(())
            };
            if let Err(err) = result.await {
                tracing::error!(error = %err, "handling a password reset request failed");
            }
        });
        Ok(())
    }

    /// Password reset, step two: spends the mailed token, sets the new password and ends
    /// every session of the user.
    ///
    /// # Errors
    /// [`crate::Error::RateLimited`]; `validation_failed` on `new_password` (policy, checked
    /// before the token is spent, so a weak choice can be corrected) or on `token`.
    #[tracing::instrument(skip_all)]
    pub async fn confirm_password_reset(
        &self,
        client: &ClientInfo,
        request: ResetConfirm,
    ) -> Result<()> {
        self.limits.check(Attempt::PasswordReset, client.ip).await?;
        self.passwords
            .policy()
            .check(&request.new_password, "new_password")?;
        let token = OneTimeToken::new(request.token);
        let now = tenantkit_core::now();
        // The token first (a cheap lookup): a guessed token costs no password hash.
        let user = mail_tokens::open(&self.db, &token.hash(), TokenPurpose::PasswordReset, now)
            .await?
            .ok_or_else(invalid_token)?;
        let hash = self.passwords.hash(&request.new_password).await?;
        let tenants: Vec<_> = self.db.memberships_of(user).await?;
        // One transaction: the token spent (exactly once, even against a concurrent use), the
        // new hash, the new epoch, every session ended, and an audit entry in every tenant.
        let mut tx = self.db.begin_system().await?;
        if mail_tokens::consume(&mut tx, &token.hash(), TokenPurpose::PasswordReset, now).await?
            != Some(user)
        {
            return Err(invalid_token().into());
        }
        tx.set_password_hash(user, &hash).await?;
        tx.bump_credentials_epoch(user).await?;
        // The token came by mail: the address is proven. This is also how the owner of an
        // address claims an account someone else registered for it: the other party's
        // password and sessions die here.
        tx.mark_email_verified(user, now).await?;
        let scope = crate::RevocationScope::User {
            user,
            tenant: None,
            except: None,
        };
        let revoked = (self.sessions.revocations())
            .revoke_in(&mut tx, scope, "password_reset", now)
            .await?
            .len() as u64;
        for membership in &tenants {
            let entry = event(client, "auth.password_reset", Some(user), "user", user)
                .details(serde_json::json!({ "sessions_revoked": revoked }));
            tx.audit_in(membership.tenant_id, entry).await?;
        }
        tx.commit().await?;
        tracing::info!(user = %user, revoked, "password reset; every session revoked");
        Ok(())
    }

    /// Email verification: spends the mailed token and marks the address verified.
    ///
    /// # Errors
    /// [`crate::Error::RateLimited`]; `validation_failed` on `token`.
    #[tracing::instrument(skip_all)]
    pub async fn confirm_email_verification(
        &self,
        client: &ClientInfo,
        request: VerifyConfirm,
    ) -> Result<()> {
        self.limits.check(Attempt::VerifyEmail, client.ip).await?;
        let token = OneTimeToken::new(request.token);
        let now = tenantkit_core::now();
        let mut tx = self.db.begin_system().await?;
        let user =
            mail_tokens::consume(&mut tx, &token.hash(), TokenPurpose::EmailVerification, now)
                .await?
                .ok_or_else(invalid_token)?;
        tx.mark_email_verified(user, now).await?;
        tx.commit().await?;
        let entry = || event(client, "auth.email_verified", Some(user), "user", user);
        self.audit_everywhere(user, entry).await?;
        tracing::info!(user = %user, "email verified");
        Ok(())
    }
}
