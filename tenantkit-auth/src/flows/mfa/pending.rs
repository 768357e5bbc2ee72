//! Sign-ins waiting for a second factor: the first step's decision
//! ([`AuthFlows::second_factor_due`]), the second step with a code or a recovery code, the
//! enrollment a tenant's policy requires, and the stored challenges.

use super::*;

impl AuthFlows {
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
        } else if policy.mfa_required && !TenantPolicy::second_factor(amr.as_slice()) {
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
    pub(super) async fn wrong_code(
        &self,
        client: &ClientInfo,
        hash: &[u8],
        challenge: &Challenge,
    ) -> Error {
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
    pub(super) async fn pending(
        &self,
        token: &str,
        purpose: Purpose,
    ) -> Result<(Vec<u8>, Challenge)> {
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
    pub(super) async fn finish_pending(
        &self,
        client: &ClientInfo,
        challenge: Challenge,
    ) -> Result<LoggedIn> {
        let methods = Vec::<String>::from(AuthMethods::from(challenge.amr))
            .into_iter()
            .chain([amr::OTP.to_owned()]);
        // `otp` is in the methods: no further factor is asked for.
        self.resume_sign_in(
            client,
            challenge.user,
            challenge.tenant,
            challenge.credentials_epoch,
            AuthMethods::new(methods),
        )
        .await?
        .into_complete()
    }
    pub(super) async fn open_challenge(
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

    pub(super) async fn count_wrong_code(&self, hash: &[u8]) -> Result<()> {
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

    pub(super) async fn take_challenge(
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
