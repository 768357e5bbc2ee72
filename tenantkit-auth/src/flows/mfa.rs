//! The second-factor flows: enroll a TOTP authenticator, confirm it with a first code (which
//! gives the recovery codes), disable it with a current code, and the second step of a
//! sign-in ([`AuthFlows::mfa_verify`]). The first step, [`AuthFlows::complete_sign_in`], asks
//! [`AuthFlows::second_factor_due`] before it starts any session. See [`crate::mfa`] for the
//! codes and how they are stored.

use std::fmt;

use serde::{Deserialize, Serialize};
use tenantkit_core::{ClientInfo, Principal, SystemTx, TenantId, User, UserId, amr, with_conn};
use time::OffsetDateTime;

use super::policy::TenantPolicy;
use super::{AuthFlows, LoggedIn, SignIn, SignInVia, event};
use crate::mfa::{self, CHALLENGE_ATTEMPTS, CHALLENGE_TTL, Mfa};
use crate::{Attempt, AuthMethods, Error, Result};

/// A new authenticator seed, shown once (`POST /v1/auth/mfa/totp`).
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct TotpEnrollment {
    /// The seed in base32, for typing into an authenticator app.
    pub secret: String,
    /// The `otpauth://totp/…` URI, for a QR code.
    pub otpauth_uri: String,
}

impl fmt::Debug for TotpEnrollment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpEnrollment(..)")
    }
}

/// The recovery codes of a confirmed enrollment, shown once.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct RecoveryCodes {
    /// Ten single-use codes, each a replacement for one authenticator code.
    pub recovery_codes: Vec<String>,
}

impl fmt::Debug for RecoveryCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecoveryCodes({} codes)", self.recovery_codes.len())
    }
}

/// A current authenticator code (confirming an enrollment).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TotpCode {
    /// Six digits from the authenticator.
    pub code: String,
}

impl fmt::Debug for TotpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpCode(..)")
    }
}

/// A second factor: an authenticator code or one recovery code (exactly one of them).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecondFactor {
    /// Six digits from the authenticator.
    #[serde(default)]
    pub code: Option<String>,
    /// One of the recovery codes (used up).
    #[serde(default)]
    pub recovery_code: Option<String>,
}

impl fmt::Debug for SecondFactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecondFactor(..)")
    }
}

/// The second step of a sign-in (`POST /v1/auth/mfa/verify`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MfaVerify {
    /// The `mfa_token` of the `mfa_required` answer.
    pub mfa_token: String,
    /// Six digits from the authenticator.
    #[serde(default)]
    pub code: Option<String>,
    /// One of the recovery codes (used up).
    #[serde(default)]
    pub recovery_code: Option<String>,
}

impl fmt::Debug for MfaVerify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MfaVerify(..)")
    }
}

/// Which factor a [`SecondFactor`] holds.
enum Factor<'a> {
    Code(&'a str),
    Recovery(&'a str),
}

fn factor<'a>(code: Option<&'a str>, recovery: Option<&'a str>) -> Result<Factor<'a>> {
    match (code, recovery) {
        (Some(code), None) => Ok(Factor::Code(code)),
        (None, Some(recovery)) => Ok(Factor::Recovery(recovery)),
        _ => Err(
            tenantkit_core::Error::Validation(vec![tenantkit_core::FieldError::new(
                "code",
                "give exactly one of `code` and `recovery_code`",
            )])
            .into(),
        ),
    }
}

/// The first step of an enrollment that a tenant's policy requires
/// (`POST /v1/auth/mfa/enroll`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingEnrollment {
    /// The `mfa_token` of the `mfa_enrollment_required` answer.
    pub mfa_token: String,
}

impl fmt::Debug for PendingEnrollment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PendingEnrollment(..)")
    }
}

/// The second step of an enrollment that a tenant's policy requires
/// (`POST /v1/auth/mfa/enroll/confirm`): the token and a first code.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingConfirmation {
    /// The `mfa_token` of the `mfa_enrollment_required` answer.
    pub mfa_token: String,
    /// Six digits from the authenticator, made from the new seed.
    pub code: String,
}

impl fmt::Debug for PendingConfirmation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PendingConfirmation(..)")
    }
}

/// A sign-in completed by enrolling a second factor: the recovery codes (shown once) beside
/// the login answer (tokens and memberships), in one flat object.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct EnrolledSignIn {
    /// Ten single-use codes, each a replacement for one authenticator code.
    pub recovery_codes: Vec<String>,
    /// The tokens and memberships, as a login answers them.
    #[serde(flatten)]
    pub signed_in: LoggedIn,
}

impl fmt::Debug for EnrolledSignIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrolledSignIn")
            .field("recovery_codes", &self.recovery_codes.len())
            .field("signed_in", &self.signed_in)
            .finish()
    }
}

/// What a pending sign-in waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A code of the account's second factor (`mfa_required`).
    Verify,
    /// An enrollment: the tenant requires a second factor the account lacks
    /// (`mfa_enrollment_required`).
    Enroll,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Enroll => "enroll",
        }
    }
}

/// The one answer for a pending-sign-in token that does not open one.
fn unknown_challenge() -> Error {
    Error::InvalidToken("unknown, used or expired mfa token")
}

/// A pending sign-in, as stored.
struct Challenge {
    user: UserId,
    tenant: TenantId,
    credentials_epoch: i64,
    amr: String,
}

impl AuthFlows {
    /// The same flows with second factors: seeds sealed and codes checked by `mfa`. Without
    /// it the enrollment routes answer `404`, and an account that enrolled earlier still
    /// gets `mfa_required` at login (its second step then answers `404` too: nothing is let
    /// through on a missing setting).
    #[must_use]
    pub fn with_mfa(mut self, mfa: Mfa) -> Self {
        self.mfa = Some(mfa);
        self
    }

    fn mfa(&self) -> Result<&Mfa> {
        self.mfa
            .as_ref()
            .ok_or(Error::Core(tenantkit_core::Error::NotFound))
    }

    fn mfa_now(&self) -> OffsetDateTime {
        self.mfa.as_ref().map_or_else(tenantkit_core::now, Mfa::now)
    }

    /// Starts (or restarts) an enrollment: a fresh seed for the caller's account, shown once.
    /// It takes effect when [`AuthFlows::totp_confirm`] gets a code made from it.
    ///
    /// # Errors
    /// `404` without [`AuthFlows::with_mfa`]; `409 conflict` when a second factor is already
    /// on (disable it first); [`Error::RateLimited`].
    pub async fn totp_enroll(&self, principal: &Principal) -> Result<TotpEnrollment> {
        self.mfa()?;
        let user = self.current_user(principal).await?;
        self.start_enrollment(&user).await
    }

    /// A fresh seed for `user`, stored unconfirmed (replacing an unconfirmed one).
    async fn start_enrollment(&self, user: &User) -> Result<TotpEnrollment> {
        let mfa = self.mfa()?;
        self.limits
            .check_account_action("mfa_enroll", user.id)
            .await?;
        let (sealed, secret, otpauth_uri) = mfa.new_seed(user.id, user.email.as_str())?;
        let now = mfa.now();
        let mut tx = self.db.begin_system().await?;
        let stored = with_conn!(&mut tx, |c| {
            sqlx::query(
                "INSERT INTO mfa_totp (user_id, secret, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, \
                 created_at = excluded.created_at WHERE mfa_totp.confirmed_at IS NULL",
            )
            .bind(user.id)
            .bind(&sealed)
            .bind(now)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
        })?;
        if stored == 0 {
            return Err(tenantkit_core::Error::Conflict(
                "a second factor is already on; disable it first".into(),
            )
            .into());
        }
        tx.commit().await?;
        Ok(TotpEnrollment {
            secret,
            otpauth_uri,
        })
    }

    /// Confirms the caller's pending enrollment with a first code: the second factor is on
    /// from now on (every new sign-in asks for it), and the answer holds the ten recovery
    /// codes (earlier ones stop working). Audited as `auth.mfa_enabled`.
    ///
    /// # Errors
    /// `404` without [`AuthFlows::with_mfa`]; `409 conflict` when no enrollment waits for
    /// confirmation; [`Error::InvalidCode`] for a wrong or used code; [`Error::RateLimited`].
    pub async fn totp_confirm(
        &self,
        client: &ClientInfo,
        principal: &Principal,
        code: &TotpCode,
    ) -> Result<RecoveryCodes> {
        let user = principal.user_id();
        let step = self.check_enrollment_code(user, &code.code).await?;
        let codes = self.confirm_enrollment(user, step).await?;
        let entry = event(client, "auth.mfa_enabled", Some(user), "user", user);
        self.audit(principal.tenant_id(), entry).await?;
        Ok(codes)
    }

    /// The step `code` proves of `user`'s unconfirmed seed, counted against the account's
    /// code budget.
    async fn check_enrollment_code(&self, user: UserId, code: &str) -> Result<(String, i64)> {
        let mfa = self.mfa()?;
        self.limits.check_account_action("mfa_code", user).await?;
        let pending = self.totp_row(user).await?;
        let Some((sealed, None)) = pending else {
            return Err(tenantkit_core::Error::Conflict(
                "no enrollment waits for confirmation; start one first".into(),
            )
            .into());
        };
        let Some(step) = mfa.matching_step(user, &sealed, code)? else {
            return Err(Error::InvalidCode);
        };
        Ok((sealed, step))
    }

    /// Turns `user`'s checked enrollment on and gives it fresh recovery codes.
    async fn confirm_enrollment(
        &self,
        user: UserId,
        (sealed, step): (String, i64),
    ) -> Result<RecoveryCodes> {
        let mfa = self.mfa()?;
        let codes = mfa::new_recovery_codes();
        let now = mfa.now();
        let mut tx = self.db.begin_system().await?;
        let confirmed = with_conn!(&mut tx, |c| {
            sqlx::query(
                "UPDATE mfa_totp SET confirmed_at = $1, last_step = $2 \
                 WHERE user_id = $3 AND secret = $4 AND confirmed_at IS NULL",
            )
            .bind(now)
            .bind(step)
            .bind(user)
            .bind(&sealed)
            .execute(&mut *c)
            .await
            .map(|done| done.rows_affected())
        })?;
        if confirmed == 0 {
            // Confirmed or restarted meanwhile.
            return Err(tenantkit_core::Error::Conflict(
                "the enrollment changed meanwhile; start again".into(),
            )
            .into());
        }
        replace_recovery_codes(&mut tx, user, &codes).await?;
        tx.commit().await?;
        Ok(RecoveryCodes {
            recovery_codes: codes,
        })
    }

    /// Turns the caller's second factor off, proven by a current code or a recovery code;
    /// the seed, the recovery codes and pending sign-ins are deleted. Audited as
    /// `auth.mfa_disabled`.
    ///
    /// # Errors
    /// `404` without [`AuthFlows::with_mfa`] or when no second factor is on; `422` unless
    /// exactly one factor is given; [`Error::InvalidCode`]; [`Error::RateLimited`].
    pub async fn totp_disable(
        &self,
        client: &ClientInfo,
        principal: &Principal,
        given: &SecondFactor,
    ) -> Result<()> {
        self.mfa()?;
        let user = principal.user_id();
        let given = factor(given.code.as_deref(), given.recovery_code.as_deref())?;
        if !self.has_second_factor(user).await? {
            return Err(tenantkit_core::Error::NotFound.into());
        }
        self.limits.check_account_action("mfa_code", user).await?;
        if !self.use_factor(user, &given).await? {
            return Err(Error::InvalidCode);
        }
        let mut tx = self.db.begin_system().await?;
        with_conn!(&mut tx, |c| {
            sqlx::query("DELETE FROM mfa_challenges WHERE user_id = $1")
                .bind(user)
                .execute(&mut *c)
                .await?;
            sqlx::query("DELETE FROM mfa_recovery_codes WHERE user_id = $1")
                .bind(user)
                .execute(&mut *c)
                .await?;
            sqlx::query("DELETE FROM mfa_totp WHERE user_id = $1")
                .bind(user)
                .execute(&mut *c)
                .await?;
            Ok::<(), sqlx::Error>(())
        })?;
        tx.commit().await?;
        let entry = event(client, "auth.mfa_disabled", Some(user), "user", user);
        self.audit(principal.tenant_id(), entry).await?;
        Ok(())
    }

    /// Whether a sign-in of `user` (into `tenant`, with the methods `amr` so far, under the
    /// tenant's `policy`) must first give a second factor: when `amr` does not include one
    /// yet (`otp`, or a provider's `mfa`) and the account has one on (a code is due), or the
    /// tenant requires one and the account has none (it must enroll).
    /// Then the pending sign-in is stored and its token returned.
    ///
    /// # Errors
    /// Storage errors.
    pub(crate) async fn second_factor_due(
        &self,
        user: &tenantkit_core::User,
        tenant: TenantId,
        amr: &AuthMethods,
        policy: &TenantPolicy,
    ) -> Result<Option<(Purpose, String)>> {
        // The account's own second factor is asked for unless this server checked it (`otp`):
        // a tenant's identity provider never vouches for it. The tenant's policy is met by
        // either (its own provider's `sso_mfa` included).
        if amr.contains(amr::OTP) {
            return Ok(None);
        }
        let purpose = if self.has_second_factor(user.id).await? {
            Purpose::Verify
        } else if policy.mfa_required && !TenantPolicy::second_factor(amr) {
            Purpose::Enroll
        } else {
            return Ok(None);
        };
        let (token, hash) = mfa::new_challenge();
        let now = self.mfa_now();
        let mut tx = self.db.begin_system().await?;
        with_conn!(&mut tx, |c| {
            // Expired challenges of this account go with each new one.
            sqlx::query("DELETE FROM mfa_challenges WHERE user_id = $1 AND expires_at <= $2")
                .bind(user.id)
                .bind(now)
                .execute(&mut *c)
                .await?;
            sqlx::query(
                "INSERT INTO mfa_challenges (token_hash, user_id, tenant_id, credentials_epoch, \
                 amr, expires_at, purpose) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&hash[..])
            .bind(user.id)
            .bind(tenant)
            .bind(user.credentials_epoch)
            .bind(amr.to_column())
            .bind(now + CHALLENGE_TTL)
            .bind(purpose.as_str())
            .execute(&mut *c)
            .await
            .map(drop)
        })?;
        tx.commit().await?;
        Ok(Some((purpose, token)))
    }

    /// The second step of a sign-in that answered `mfa_required`: the pending sign-in's token
    /// and a current code or a recovery code. Gives the session and token pair the first step
    /// would have (`amr` gains `otp`). A token is used once; five wrong codes drop it; it
    /// lasts five minutes. A used recovery code is audited as `auth.mfa_recovery_code_used`,
    /// a wrong code as `auth.mfa_failed`.
    ///
    /// # Errors
    /// [`Error::InvalidToken`] for an unknown, used, expired or dropped token (or one that
    /// can only enroll); [`Error::InvalidCode`]; `422` unless exactly one factor is given;
    /// [`Error::RateLimited`] (per client network, and per account);
    /// [`Error::InvalidCredentials`] when the password changed meanwhile; `404` without
    /// [`AuthFlows::with_mfa`].
    pub async fn mfa_verify(&self, client: &ClientInfo, request: &MfaVerify) -> Result<LoggedIn> {
        self.limits.check(Attempt::Login, client.ip).await?;
        self.mfa()?;
        let given = factor(request.code.as_deref(), request.recovery_code.as_deref())?;
        let (hash, challenge) = self.pending(&request.mfa_token, Purpose::Verify).await?;
        self.limits
            .check_account_action("mfa_code", challenge.user)
            .await?;
        if !self.use_factor(challenge.user, &given).await? {
            return Err(self.wrong_code(client, &hash, &challenge).await);
        }
        // Single use: of two requests that both passed the factor check (one code and one
        // recovery code), only one takes the pending sign-in.
        if !self
            .take_challenge(&hash, Purpose::Verify, self.mfa_now())
            .await?
        {
            return Err(unknown_challenge());
        }
        if let Factor::Recovery(_) = given {
            let entry = event(
                client,
                "auth.mfa_recovery_code_used",
                Some(challenge.user),
                "user",
                challenge.user,
            );
            self.audit(challenge.tenant, entry).await?;
        }
        self.finish_pending(client, challenge).await
    }

    /// The first step of a sign-in that answered `mfa_enrollment_required` (the tenant
    /// requires a second factor, the account has none): a fresh seed for the pending
    /// sign-in's account, shown once. The token is not used up: confirm with
    /// [`AuthFlows::mfa_confirm_pending`]. Enrolling is all such a token can do.
    ///
    /// # Errors
    /// [`Error::InvalidToken`] for an unknown, used or expired token, or one that is not for
    /// enrolling; `409 conflict` when the account has a second factor on meanwhile;
    /// [`Error::RateLimited`]; `404` without [`AuthFlows::with_mfa`].
    pub async fn mfa_enroll_pending(
        &self,
        client: &ClientInfo,
        request: &PendingEnrollment,
    ) -> Result<TotpEnrollment> {
        self.limits.check(Attempt::Login, client.ip).await?;
        self.mfa()?;
        let (_, challenge) = self.pending(&request.mfa_token, Purpose::Enroll).await?;
        let user = self
            .db
            .find_user(challenge.user)
            .await?
            .ok_or_else(unknown_challenge)?;
        self.start_enrollment(&user).await
    }

    /// The second step of a sign-in that answered `mfa_enrollment_required`: a first code of
    /// the seed from [`AuthFlows::mfa_enroll_pending`] turns the second factor on (audited as
    /// `auth.mfa_enabled`) and completes the sign-in (`amr` gains `otp`); the answer holds the
    /// recovery codes, shown once, beside the tokens. The token is used once; five wrong codes
    /// drop it.
    ///
    /// # Errors
    /// As [`AuthFlows::mfa_enroll_pending`]; [`Error::InvalidCode`]; `409 conflict` when no
    /// enrollment waits for confirmation; [`Error::InvalidCredentials`] when the password
    /// changed meanwhile.
    pub async fn mfa_confirm_pending(
        &self,
        client: &ClientInfo,
        request: &PendingConfirmation,
    ) -> Result<EnrolledSignIn> {
        self.limits.check(Attempt::Login, client.ip).await?;
        self.mfa()?;
        let (hash, challenge) = self.pending(&request.mfa_token, Purpose::Enroll).await?;
        let checked = match self
            .check_enrollment_code(challenge.user, &request.code)
            .await
        {
            Err(Error::InvalidCode) => {
                return Err(self.wrong_code(client, &hash, &challenge).await);
            }
            other => other?,
        };
        // The pending sign-in is taken before the factor turns on: two confirmations of one
        // token sign in once.
        if !self
            .take_challenge(&hash, Purpose::Enroll, self.mfa_now())
            .await?
        {
            return Err(unknown_challenge());
        }
        let codes = self.confirm_enrollment(challenge.user, checked).await?;
        let entry = event(
            client,
            "auth.mfa_enabled",
            Some(challenge.user),
            "user",
            challenge.user,
        );
        self.audit(challenge.tenant, entry).await?;
        let signed_in = self.finish_pending(client, challenge).await?;
        Ok(EnrolledSignIn {
            recovery_codes: codes.recovery_codes,
            signed_in,
        })
    }

    /// A wrong code given for a pending sign-in: counted against it (five drop it) and
    /// audited as `auth.mfa_failed`; answers the error to return.
    async fn wrong_code(&self, client: &ClientInfo, hash: &[u8], challenge: &Challenge) -> Error {
        let user = challenge.user;
        let entry = event(client, "auth.mfa_failed", Some(user), "user", user);
        let recorded = match self.count_wrong_code(hash).await {
            Ok(()) => self.audit(challenge.tenant, entry).await,
            Err(err) => Err(err),
        };
        match recorded {
            Ok(()) => Error::InvalidCode,
            Err(err) => err,
        }
    }

    /// The open pending sign-in `token` names for `purpose`, with its hash.
    async fn pending(&self, token: &str, purpose: Purpose) -> Result<(Vec<u8>, Challenge)> {
        let Some(hash) = mfa::challenge_hash(token) else {
            return Err(unknown_challenge());
        };
        let challenge = self
            .open_challenge(&hash, purpose, self.mfa_now())
            .await?
            .ok_or_else(unknown_challenge)?;
        Ok((hash.to_vec(), challenge))
    }

    /// Completes a pending sign-in whose second factor was given: the session the first step
    /// would have started, under the credentials epoch it was checked at (a reset or "log out
    /// everywhere" since then leaves no session behind), with `otp` added to its methods.
    async fn finish_pending(&self, client: &ClientInfo, challenge: Challenge) -> Result<LoggedIn> {
        let mut user = self
            .db
            .find_user(challenge.user)
            .await?
            .ok_or(Error::InvalidCredentials)?;
        user.credentials_epoch = challenge.credentials_epoch;
        let memberships = self.db.memberships_of(user.id).await?;
        let membership = memberships
            .iter()
            .find(|m| m.tenant_id == challenge.tenant)
            .cloned()
            .ok_or(Error::InvalidCredentials)?;
        let methods = Vec::<String>::from(AuthMethods::from(challenge.amr))
            .into_iter()
            .chain([amr::OTP.to_owned()]);
        let signed_in = match self
            .complete_sign_in(
                client,
                &user,
                &membership,
                AuthMethods::new(methods),
                None,
                SignInVia::Login,
            )
            .await
        {
            Err(Error::CredentialsChanged) => return Err(Error::InvalidCredentials),
            other => other?,
        };
        match signed_in {
            SignIn::Complete(done) => Ok(LoggedIn {
                tokens: done.tokens,
                memberships,
            }),
            // `otp` is in the methods: no further factor is asked for.
            SignIn::MfaRequired { .. } | SignIn::MfaEnrollmentRequired { .. } => {
                Err(Error::LoginRequired)
            }
        }
    }
    /// Whether `user` has a second factor on (a confirmed seed).
    ///
    /// # Errors
    /// Storage errors.
    pub(crate) async fn has_second_factor(&self, user: UserId) -> Result<bool> {
        Ok(matches!(self.totp_row(user).await?, Some((_, Some(_)))))
    }

    /// The account's seed and when it was confirmed, if it has one.
    async fn totp_row(&self, user: UserId) -> Result<Option<(String, Option<OffsetDateTime>)>> {
        let mut tx = self.db.begin_system_read().await?;
        let row = with_conn!(&mut tx, |c| {
            sqlx::query_as::<_, (String, Option<OffsetDateTime>)>(
                "SELECT secret, confirmed_at FROM mfa_totp WHERE user_id = $1",
            )
            .bind(user)
            .fetch_optional(c)
            .await
        })?;
        tx.commit().await?;
        Ok(row)
    }

    /// Checks and uses up a factor of `user`'s confirmed second factor: a code whose step is
    /// later than the last one accepted (so each code works once), or an unused recovery code.
    async fn use_factor(&self, user: UserId, given: &Factor<'_>) -> Result<bool> {
        let mfa = self.mfa()?;
        let used = match given {
            Factor::Code(code) => {
                let Some((sealed, Some(_))) = self.totp_row(user).await? else {
                    return Ok(false);
                };
                let Some(step) = mfa.matching_step(user, &sealed, code)? else {
                    return Ok(false);
                };
                let mut tx = self.db.begin_system().await?;
                let used = with_conn!(&mut tx, |c| {
                    sqlx::query(
                        "UPDATE mfa_totp SET last_step = $1 WHERE user_id = $2 \
                         AND confirmed_at IS NOT NULL AND last_step < $1",
                    )
                    .bind(step)
                    .bind(user)
                    .execute(c)
                    .await
                    .map(|done| done.rows_affected())
                })?;
                tx.commit().await?;
                used
            }
            Factor::Recovery(code) => {
                let hash = mfa::recovery_hash(code);
                let mut tx = self.db.begin_system().await?;
                let used = with_conn!(&mut tx, |c| {
                    sqlx::query(
                        "UPDATE mfa_recovery_codes SET used_at = $1 \
                         WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
                    )
                    .bind(mfa.now())
                    .bind(user)
                    .bind(&hash[..])
                    .execute(c)
                    .await
                    .map(|done| done.rows_affected())
                })?;
                tx.commit().await?;
                used
            }
        };
        Ok(used == 1)
    }

    async fn open_challenge(
        &self,
        hash: &[u8],
        purpose: Purpose,
        now: OffsetDateTime,
    ) -> Result<Option<Challenge>> {
        let mut tx = self.db.begin_system_read().await?;
        let row = with_conn!(&mut tx, |c| {
            sqlx::query_as::<_, (UserId, TenantId, i64, String)>(
                "SELECT user_id, tenant_id, credentials_epoch, amr FROM mfa_challenges \
                 WHERE token_hash = $1 AND purpose = $2 AND expires_at > $3 AND attempts < $4",
            )
            .bind(hash)
            .bind(purpose.as_str())
            .bind(now)
            .bind(CHALLENGE_ATTEMPTS)
            .fetch_optional(c)
            .await
        })?;
        tx.commit().await?;
        Ok(row.map(|(user, tenant, credentials_epoch, amr)| Challenge {
            user,
            tenant,
            credentials_epoch,
            amr,
        }))
    }

    async fn count_wrong_code(&self, hash: &[u8]) -> Result<()> {
        let mut tx = self.db.begin_system().await?;
        with_conn!(&mut tx, |c| {
            sqlx::query("UPDATE mfa_challenges SET attempts = attempts + 1 WHERE token_hash = $1")
                .bind(hash)
                .execute(&mut *c)
                .await?;
            sqlx::query("DELETE FROM mfa_challenges WHERE token_hash = $1 AND attempts >= $2")
                .bind(hash)
                .bind(CHALLENGE_ATTEMPTS)
                .execute(&mut *c)
                .await
                .map(drop)
        })?;
        tx.commit().await?;
        Ok(())
    }

    async fn take_challenge(
        &self,
        hash: &[u8],
        purpose: Purpose,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let mut tx = self.db.begin_system().await?;
        let taken = with_conn!(&mut tx, |c| {
            sqlx::query(
                "DELETE FROM mfa_challenges WHERE token_hash = $1 AND purpose = $2 \
                 AND expires_at > $3 AND attempts < $4",
            )
            .bind(hash)
            .bind(purpose.as_str())
            .bind(now)
            .bind(CHALLENGE_ATTEMPTS)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
        })?;
        tx.commit().await?;
        Ok(taken == 1)
    }
}

async fn replace_recovery_codes(tx: &mut SystemTx, user: UserId, codes: &[String]) -> Result<()> {
    with_conn!(tx, |c| {
        sqlx::query("DELETE FROM mfa_recovery_codes WHERE user_id = $1")
            .bind(user)
            .execute(&mut *c)
            .await?;
        for code in codes {
            sqlx::query("INSERT INTO mfa_recovery_codes (user_id, code_hash) VALUES ($1, $2)")
                .bind(user)
                .bind(&mfa::recovery_hash(code)[..])
                .execute(&mut *c)
                .await?;
        }
        Ok::<(), sqlx::Error>(())
    })?;
    Ok(())
}
