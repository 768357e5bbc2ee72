//! Signing in, in two steps: [`AuthFlows::check_credentials`] proves who is asking (a password
//! today; another crate's SSO the same way), and [`AuthFlows::complete_sign_in`], the one step
//! every flow that signs someone in ends with (signup, login, tenant switch, accepting an
//! invitation): it starts the session, issues the token pair and audits the sign-in.

use tenantkit_core::{ClientInfo, Email, Membership, Role, Slug, TenantId, User};

use super::mfa::Purpose;
use super::policy::TenantPolicy;
use super::{AuthFlows, LoginRequest, TokenPair, event};
use crate::refresh::SessionRecord;
use crate::{Attempt, AuthMethods, Error, Result, Verification};

/// An account whose credentials were just checked, and the tenant it signs in to.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CheckedCredentials {
    /// The account, as read before its (slow) check: its `credentials_epoch` is the one the new
    /// session must still match, so a reset or "log out everywhere" meanwhile leaves no
    /// session behind.
    pub user: User,
    /// The membership chosen (the requested tenant, or the first one).
    pub membership: Membership,
    /// Every membership of the account in a live tenant.
    pub memberships: Vec<Membership>,
    /// How the account proved itself (`["pwd"]` for a password).
    pub amr: AuthMethods,
}

/// Which flow completes a sign-in: it decides the sign-in's audit entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignInVia {
    /// Checked credentials (a login): audited as `auth.login` about the new session.
    Login,
    /// A tenant switch from a live session: audited as `auth.tenant_switched` about the new
    /// session.
    TenantSwitch,
    /// A signup: its `auth.signup` entry was written with the new tenant and account.
    Signup,
    /// An accepted invitation: its `invitation.accepted` entry was written with the new
    /// membership.
    Invitation,
}

impl SignInVia {
    /// The audit action written about the new session, unless the flow wrote its own entry
    /// in the transaction that created the account or membership.
    fn audit_action(self) -> Option<&'static str> {
        match self {
            Self::Login => Some("auth.login"),
            Self::TenantSwitch => Some("auth.tenant_switched"),
            Self::Signup | Self::Invitation => None,
        }
    }
}

/// A session just started, with its token pair.
#[derive(Debug)]
#[non_exhaustive]
pub struct SignedIn {
    /// The token pair for the session.
    pub tokens: TokenPair,
    /// The new session.
    pub session: SessionRecord,
    /// The role the user holds in the session's tenant.
    pub role: Role,
}

/// What completing a sign-in came to.
#[derive(Debug)]
#[non_exhaustive]
pub enum SignIn<T = SignedIn> {
    /// Signed in: the flow's answer (the token pair, and what else the flow answers).
    Complete(T),
    /// The credentials were right but the account has a second factor on: no session started.
    /// [`AuthFlows::mfa_verify`] continues with the token and a code.
    #[non_exhaustive]
    MfaRequired {
        /// The short-lived token that continues this sign-in once the second factor is given.
        mfa_token: String,
    },
    /// The credentials were right, but the tenant requires a second factor and the account
    /// has none: no session started. The token can only enroll one
    /// ([`AuthFlows::mfa_enroll_pending`], then [`AuthFlows::mfa_confirm_pending`], which
    /// signs in).
    #[non_exhaustive]
    MfaEnrollmentRequired {
        /// The short-lived token that enrolls a second factor and then continues this sign-in.
        mfa_token: String,
    },
}

impl<T> SignIn<T> {
    /// The same outcome with `f` applied to a complete sign-in's answer.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> SignIn<U> {
        match self {
            Self::Complete(done) => SignIn::Complete(f(done)),
            Self::MfaRequired { mfa_token } => SignIn::MfaRequired { mfa_token },
            Self::MfaEnrollmentRequired { mfa_token } => {
                SignIn::MfaEnrollmentRequired { mfa_token }
            }
        }
    }

    /// The answer of a complete sign-in, for the password-only flows ([`AuthFlows::login`]
    /// and friends), which cannot continue with a second factor.
    ///
    /// # Errors
    /// [`Error::LoginRequired`] when a second factor is due.
    pub fn into_complete(self) -> Result<T> {
        match self {
            Self::Complete(done) => Ok(done),
            Self::MfaRequired { .. } | Self::MfaEnrollmentRequired { .. } => {
                Err(Error::LoginRequired)
            }
        }
    }
}

impl AuthFlows {
    /// The first step of a login: counts the attempt against the rate limits, checks the
    /// password (an unknown email costs one full verification too, and every failure answers
    /// the same), rehashes it when the hasher's parameters changed, applies the email-verified
    /// rule of [`super::SignupMode::VerifyFirst`] and picks the tenant among the account's
    /// memberships in live tenants. Starts no session: see [`AuthFlows::complete_sign_in`].
    ///
    /// A network that knew the password is recorded as the account's own with the limiter
    /// here, before the email and tenant rules (it may pass the account-wide ceiling of a
    /// guessing run even after a mistyped password).
    ///
    /// # Errors
    /// [`Error::RateLimited`] (per client network; for a network whose failure budget against
    /// the account is spent; for a network that failed against an account past its
    /// account-wide ceiling, never for one that has not); [`Error::InvalidCredentials`] for a
    /// wrong email, password or tenant alike; [`Error::EmailUnverified`] in
    /// [`super::SignupMode::VerifyFirst`] for an unproven address (after the password
    /// matched; a new link is mailed).
    pub async fn check_credentials(
        &self,
        client: &ClientInfo,
        request: &LoginRequest,
    ) -> Result<CheckedCredentials> {
        // Counted before any password work, successful or not.
        self.limits.check(Attempt::Login, client.ip).await?;
        self.limits.check_login(&request.email, client.ip).await?;
        let user = match Email::parse(&request.email) {
            Ok(email) => self.db.find_user_by_email(&email).await?,
            Err(_) => None,
        };
        // An unknown account costs a full verification against a dummy hash, and every
        // failure below answers the same, so neither timing nor message reveals which
        // accounts exist.
        let stored = user.as_ref().and_then(|u| u.password_hash.as_ref());
        let verification = self.passwords.verify(&request.password, stored).await?;
        let (user, needs_rehash) = match (user, verification) {
            (Some(user), Verification::Match { needs_rehash }) => (user, needs_rehash),
            (known, _) => {
                if let Some(known) = known {
                    self.record_failed_login(client, known.id);
                }
                tracing::info!("login failed");
                self.limits
                    .record_login_failure(&request.email, client.ip)
                    .await?;
                return Err(Error::InvalidCredentials);
            }
        };
        // The network knows the password: it is the account's own, let through the
        // account-wide ceiling of a guessing run even after a mistyped password.
        if let Err(err) = self
            .limits
            .record_login_success(&request.email, client.ip)
            .await
        {
            // The password is proven and the checks before it passed: the login proceeds.
            tracing::warn!(error = %err, "could not record a successful login in the rate limits");
        }
        if self.signup_mode == super::SignupMode::VerifyFirst && user.email_verified_at.is_none() {
            // Only after the password matched: this tells nothing to someone who lacks it.
            tracing::info!(user = %user.id, "login refused: address not verified");
            if self
                .limits
                .check_account_action("verification_mail", user.id)
                .await
                .is_ok()
            {
                self.offer_verification(&user).await;
            }
            return Err(Error::EmailUnverified);
        }
        if needs_rehash {
            let upgraded = self.passwords.hash(&request.password).await?;
            self.db.set_password_hash(user.id, &upgraded).await?;
            tracing::info!(user = %user.id, "password rehashed with current parameters");
        }
        let memberships = self.db.memberships_of(user.id).await?;
        let chosen = match request.tenant.as_deref() {
            None => memberships.first().cloned(),
            Some(wanted) => {
                let tenant_id = match wanted.parse::<TenantId>() {
                    Ok(id) => Some(id),
                    Err(_) => match Slug::parse(wanted) {
                        Ok(slug) => self.db.find_tenant_by_slug(&slug).await?.map(|t| t.id),
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
            return Err(Error::InvalidCredentials);
        };
        Ok(CheckedCredentials {
            user,
            membership,
            memberships,
            amr: AuthMethods::password(),
        })
    }

    /// The last step of every sign-in (signup, login, tenant switch, accepted invitation):
    /// starts a session for `user` in `membership`'s tenant, issues its token pair with
    /// `membership`'s role, and audits the sign-in as `via` says.
    ///
    /// Without `parent`, the session records `amr` and is only made while `user`'s
    /// credentials epoch (as read before its credentials were checked) is still current.
    /// With `parent` (a tenant switch), it is derived from that session: same user,
    /// credentials epoch and methods, ending no later; `amr` must then be the parent's and
    /// `user` its user.
    ///
    /// # Errors
    /// [`Error::CredentialsChanged`] when the epoch moved on (a reset or "log out everywhere"
    /// meanwhile); `forbidden` when `parent` is not `user`'s or `amr` is not its methods, or
    /// `membership` is not `user`'s; storage and signing errors.
    pub async fn complete_sign_in(
        &self,
        client: &ClientInfo,
        user: &User,
        membership: &Membership,
        amr: AuthMethods,
        parent: Option<&SessionRecord>,
        via: SignInVia,
    ) -> Result<SignIn> {
        if membership.user_id != user.id
            || parent.is_some_and(|p| p.user_id != user.id || p.amr != amr)
        {
            return Err(tenantkit_core::Error::Forbidden.into());
        }
        let tenant = membership.tenant_id;
        // A session derived in another tenant keeps only the account's own methods.
        let amr = match parent {
            Some(parent) if parent.tenant_id != tenant => amr.in_another_tenant(),
            _ => amr,
        };
        let policy = self.policy_of(tenant).await?;
        // SSO required: only a sign-in through the tenant's provider, except an owner's
        // (break-glass, audited below), so a broken provider never locks the tenant out.
        let bypass = policy.sso_required && !amr.contains(tenantkit_core::amr::SSO);
        if bypass && membership.role != tenantkit_core::Role::Owner {
            tracing::info!(user = %user.id, tenant = %tenant, ?via, "sign-in refused: the tenant requires single sign-on");
            return Err(Error::SsoRequired);
        }
        // A new sign-in of an account with a second factor on, or into a tenant that requires
        // one: nothing starts until it is given (or enrolled). A tenant switch derives from a
        // live session and keeps its methods (a session started before the account enrolled
        // keeps working, without `otp`, until it ends), except into a tenant that requires a
        // second factor the session did not give.
        if parent.is_none() {
            if let Some((purpose, mfa_token)) =
                self.second_factor_due(user, tenant, &amr, &policy).await?
            {
                tracing::info!(user = %user.id, tenant = %tenant, ?via, ?purpose, "second factor due");
                return Ok(match purpose {
                    Purpose::Verify => SignIn::MfaRequired { mfa_token },
                    Purpose::Enroll => SignIn::MfaEnrollmentRequired { mfa_token },
                });
            }
        } else if policy.mfa_required && !TenantPolicy::second_factor(amr.as_slice()) {
            tracing::info!(user = %user.id, tenant = %tenant, "tenant switch refused: the tenant requires a second factor");
            return Err(Error::InsufficientAuthentication(tenantkit_core::amr::OTP));
        }
        let (session, refresh) = match parent {
            Some(parent) => self.sessions.start_derived(parent, tenant).await?,
            None => {
                (self.sessions)
                    .start_signed_in(user.id, tenant, user.credentials_epoch, amr)
                    .await?
            }
        };
        if let Some(action) = via.audit_action() {
            let entry = event(client, action, Some(user.id), "session", session.id);
            self.audit(tenant, entry).await?;
        }
        if bypass {
            let entry = event(
                client,
                "auth.sso_bypassed",
                Some(user.id),
                "session",
                session.id,
            );
            self.audit(tenant, entry).await?;
            tracing::warn!(user = %user.id, tenant = %tenant, "an owner signed in without the tenant's required single sign-on");
        }
        tracing::info!(user = %user.id, tenant = %tenant, session = %session.id, ?via, "signed in");
        let tokens = self.token_pair(&session, membership.role, &refresh)?;
        Ok(SignIn::Complete(SignedIn {
            tokens,
            session,
            role: membership.role,
        }))
    }

    /// Completes a sign-in whose credentials were checked earlier (a pending second factor, a
    /// single sign-on code): `user` into `tenant` with `amr`, under the credentials epoch read
    /// when they were checked (a reset or "log out everywhere" since then leaves no session
    /// behind: [`Error::InvalidCredentials`], as for an account or membership gone meanwhile).
    /// Answers as a login does, with every membership of the account.
    ///
    /// # Errors
    /// [`Error::InvalidCredentials`]; as [`AuthFlows::complete_sign_in`].
    pub(crate) async fn resume_sign_in(
        &self,
        client: &ClientInfo,
        user: tenantkit_core::UserId,
        tenant: TenantId,
        credentials_epoch: i64,
        amr: AuthMethods,
    ) -> Result<SignIn<super::LoggedIn>> {
        let mut user = self
            .db
            .find_user(user)
            .await?
            .ok_or(Error::InvalidCredentials)?;
        user.credentials_epoch = credentials_epoch;
        let memberships = self.db.memberships_of(user.id).await?;
        let membership = memberships
            .iter()
            .find(|m| m.tenant_id == tenant)
            .cloned()
            .ok_or(Error::InvalidCredentials)?;
        let signed_in = match self
            .complete_sign_in(client, &user, &membership, amr, None, SignInVia::Login)
            .await
        {
            Err(Error::CredentialsChanged) => return Err(Error::InvalidCredentials),
            other => other?,
        };
        Ok(signed_in.map(|done| super::LoggedIn {
            tokens: done.tokens,
            memberships,
        }))
    }

    /// A failed login against a real account is a security event for its tenants. It is
    /// recorded in the background, so the answer takes as long as for an unknown email (no
    /// enumeration by timing).
    fn record_failed_login(&self, client: &ClientInfo, user: tenantkit_core::UserId) {
        let (flows, client) = (self.clone(), client.clone());
        tokio::spawn(async move {
            let entry = || event(&client, "auth.login_failed", None, "user", user);
            if let Err(err) = flows.audit_everywhere(user, entry).await {
                tracing::error!(error = %err, "recording a failed login failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_only_flow_refuses_a_pending_second_factor() {
        let pending: SignIn<u8> = SignIn::MfaRequired {
            mfa_token: "pending".into(),
        };
        let mapped = pending.map(u16::from);
        assert!(matches!(mapped, SignIn::MfaRequired { ref mfa_token } if mfa_token == "pending"));
        assert!(matches!(mapped.into_complete(), Err(Error::LoginRequired)));
        assert_eq!(
            SignIn::Complete(7u8).map(u16::from).into_complete().ok(),
            Some(7u16)
        );
    }
}
