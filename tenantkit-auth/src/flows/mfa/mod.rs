//! The second-factor flows: enroll a TOTP authenticator, confirm it with a first code (which
//! gives the recovery codes), disable it with a current code, and the second step of a
//! sign-in ([`AuthFlows::mfa_verify`]). The first step, [`AuthFlows::complete_sign_in`], asks
//! [`AuthFlows::second_factor_due`] before it starts any session. See [`crate::mfa`] for the
//! codes and how they are stored.

mod enroll;
mod pending;

use std::fmt;

use serde::{Deserialize, Serialize};
use tenantkit_core::{ClientInfo, Principal, SystemTx, TenantId, User, UserId, amr, with_conn};
use time::OffsetDateTime;

use super::policy::TenantPolicy;
use super::{AuthFlows, LoggedIn, event};
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
}
