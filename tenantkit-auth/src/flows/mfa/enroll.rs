//! Enrolling a TOTP authenticator (started, confirmed with a first code, which gives the
//! recovery codes) and turning it off.

use super::*;

impl AuthFlows {
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
    pub(super) async fn start_enrollment(&self, user: &User) -> Result<TotpEnrollment> {
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
    pub(super) async fn check_enrollment_code(
        &self,
        user: UserId,
        code: &str,
    ) -> Result<(String, i64)> {
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
    pub(super) async fn confirm_enrollment(
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
}

pub(super) async fn replace_recovery_codes(
    tx: &mut SystemTx,
    user: UserId,
    codes: &[String],
) -> Result<()> {
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
