//! The second-factor flows: enroll a TOTP authenticator, confirm it with a first code (which
//! gives the recovery codes), disable it with a current code, and the second step of a
//! sign-in ([`AuthFlows::mfa_verify`]). The first step, [`AuthFlows::complete_sign_in`], asks
//! [`AuthFlows::second_factor_due`] before it starts any session. See [`crate::mfa`] for the
//! codes and how they are stored.

use std::fmt;

use serde::{Deserialize, Serialize};
use tenantkit_core::{ClientInfo, Principal, SystemTx, TenantId, UserId, amr, with_conn};
use time::OffsetDateTime;

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
        let mfa = self.mfa()?;
        let user_id = principal.user_id();
        self.limits
            .check_account_action("mfa_enroll", user_id)
            .await?;
        let user = self.current_user(principal).await?;
        let (sealed, secret, otpauth_uri) = mfa.new_seed(user_id, user.email.as_str())?;
        let now = mfa.now();
        let mut tx = self.db.begin_system().await?;
        let stored = with_conn!(&mut tx, |c| {
            sqlx::query(
                "INSERT INTO mfa_totp (user_id, secret, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, \
                 created_at = excluded.created_at WHERE mfa_totp.confirmed_at IS NULL",
            )
            .bind(user_id)
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
        let mfa = self.mfa()?;
        let user = principal.user_id();
        self.limits.check_account_action("mfa_code", user).await?;
        let pending = self.totp_row(user).await?;
        let Some((sealed, None)) = pending else {
            return Err(tenantkit_core::Error::Conflict(
                "no enrollment waits for confirmation; start one first".into(),
            )
            .into());
        };
        let Some(step) = mfa.matching_step(user, &sealed, &code.code)? else {
            return Err(Error::InvalidCode);
        };
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
        let entry = event(client, "auth.mfa_enabled", Some(user), "user", user);
        self.audit(principal.tenant_id(), entry).await?;
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

    /// Whether a sign-in of `user` (into `tenant`, with the methods `amr` so far) must first
    /// give a second factor: when the account has one on and `amr` does not include one yet.
    /// Then the pending sign-in is stored and its token returned.
    ///
    /// # Errors
    /// Storage errors.
    pub(crate) async fn second_factor_due(
        &self,
        user: &tenantkit_core::User,
        tenant: TenantId,
        amr: &AuthMethods,
    ) -> Result<Option<String>> {
        if amr.contains(amr::OTP) || !self.has_second_factor(user.id).await? {
            return Ok(None);
        }
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
                 amr, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&hash[..])
            .bind(user.id)
            .bind(tenant)
            .bind(user.credentials_epoch)
            .bind(amr.to_column())
            .bind(now + CHALLENGE_TTL)
            .execute(&mut *c)
            .await
            .map(drop)
        })?;
        tx.commit().await?;
        Ok(Some(token))
    }

    /// The second step of a sign-in that answered `mfa_required`: the pending sign-in's token
    /// and a current code or a recovery code. Gives the session and token pair the first step
    /// would have (`amr` gains `otp`). A token is used once; five wrong codes drop it; it
    /// lasts five minutes. A used recovery code is audited as `auth.mfa_recovery_code_used`,
    /// a wrong code as `auth.mfa_failed`.
    ///
    /// # Errors
    /// [`Error::InvalidToken`] for an unknown, used, expired or dropped token;
    /// [`Error::InvalidCode`]; `422` unless exactly one factor is given;
    /// [`Error::RateLimited`] (per client network, and per account);
    /// [`Error::InvalidCredentials`] when the password changed meanwhile; `404` without
    /// [`AuthFlows::with_mfa`].
    pub async fn mfa_verify(&self, client: &ClientInfo, request: &MfaVerify) -> Result<LoggedIn> {
        self.limits.check(Attempt::Login, client.ip).await?;
        self.mfa()?;
        let given = factor(request.code.as_deref(), request.recovery_code.as_deref())?;
        let unknown = Error::InvalidToken("unknown, used or expired mfa token");
        let Some(hash) = mfa::challenge_hash(&request.mfa_token) else {
            return Err(unknown);
        };
        let now = self.mfa_now();
        let Some(challenge) = self.open_challenge(&hash, now).await? else {
            return Err(unknown);
        };
        self.limits
            .check_account_action("mfa_code", challenge.user)
            .await?;
        if !self.use_factor(challenge.user, &given).await? {
            self.count_wrong_code(&hash).await?;
            let entry = event(
                client,
                "auth.mfa_failed",
                Some(challenge.user),
                "user",
                challenge.user,
            );
            self.audit(challenge.tenant, entry).await?;
            return Err(Error::InvalidCode);
        }
        // Single use: of two requests that both passed the factor check (one code and one
        // recovery code), only one takes the pending sign-in.
        if !self.take_challenge(&hash, now).await? {
            return Err(unknown);
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
        let mut user = self
            .db
            .find_user(challenge.user)
            .await?
            .ok_or(Error::InvalidCredentials)?;
        // The session is made under the epoch the password was checked at: a reset or "log
        // out everywhere" since then leaves no session behind.
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
            SignIn::MfaRequired { .. } => Err(Error::LoginRequired),
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

    async fn open_challenge(&self, hash: &[u8], now: OffsetDateTime) -> Result<Option<Challenge>> {
        let mut tx = self.db.begin_system_read().await?;
        let row = with_conn!(&mut tx, |c| {
            sqlx::query_as::<_, (UserId, TenantId, i64, String)>(
                "SELECT user_id, tenant_id, credentials_epoch, amr FROM mfa_challenges \
                 WHERE token_hash = $1 AND expires_at > $2 AND attempts < $3",
            )
            .bind(hash)
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

    async fn take_challenge(&self, hash: &[u8], now: OffsetDateTime) -> Result<bool> {
        let mut tx = self.db.begin_system().await?;
        let taken = with_conn!(&mut tx, |c| {
            sqlx::query(
                "DELETE FROM mfa_challenges WHERE token_hash = $1 AND expires_at > $2 \
                 AND attempts < $3",
            )
            .bind(hash)
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
