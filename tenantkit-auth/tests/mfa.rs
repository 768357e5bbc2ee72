//! The second factor, on both backends, on a clock the tests move (no test waits for a time
//! step): enrollment and confirmation, login answering `mfa_required` with no session, the
//! second step with a code or a recovery code, each code and token used at most once, ±1 step
//! of skew and no more, expiry and attempt limits of a pending sign-in, a password reset in
//! between, another account's code, disabling, and the step-up requirement.

use std::sync::Arc;
use std::time::Duration;

use tenantkit_auth::flows::{
    AcceptInvitation, InviteRequest, LoginRequest, MfaVerify, PendingConfirmation,
    PendingEnrollment, SecondFactor, SignIn, SwitchTenant, TenantPolicyPatch, TotpCode,
};
use tenantkit_auth::mfa::Mfa;
use tenantkit_auth::{Error, Password, RateLimitConfig, RateLimits, RefreshToken};
use tenantkit_core::{Clock as _, Keyring, ManualClock, Principal, SecretKey, TenantScope, amr};

mod support;

use support::{Flows, PASSWORD};

/// The flows with second factors on `clock`, and no rate limits unless `limited`.
async fn mfa_flows(
    backend: tenantkit_core::Backend,
    limited: bool,
) -> Option<(Flows, Arc<ManualClock>)> {
    let mut f = support::flows(backend).await?;
    let clock = Arc::new(ManualClock::starting_now());
    let key = SecretKey::from_bytes("test", &[9_u8; 32]).expect("key");
    let mut flows = f
        .flows
        .clone()
        .with_mfa(Mfa::new(Keyring::new(key), "Tests").with_clock(clock.clone()));
    if !limited {
        flows = flows.with_limits(Arc::new(RateLimits::new(RateLimitConfig::unlimited())));
    }
    f.flows = flows;
    Some((f, clock))
}

/// What an authenticator app holding `secret` shows at the clock's time, `steps` steps later.
fn code(secret: &str, clock: &ManualClock, steps: i64) -> String {
    let seed = totp_rs::Secret::Encoded(secret.to_owned())
        .to_bytes()
        .expect("base32");
    let totp = totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 0, 30, seed).expect("totp");
    let at = clock.now().unix_timestamp() + steps * 30;
    totp.generate(u64::try_from(at).expect("after 1970"))
}

fn login(email: &str) -> LoginRequest {
    LoginRequest {
        email: email.into(),
        password: Password::new(PASSWORD),
        tenant: None,
    }
}

fn with_code(token: &str, code: String) -> MfaVerify {
    MfaVerify {
        mfa_token: token.to_owned(),
        code: Some(code),
        recovery_code: None,
    }
}

fn with_recovery(token: &str, code: &str) -> MfaVerify {
    MfaVerify {
        mfa_token: token.to_owned(),
        code: None,
        recovery_code: Some(code.to_owned()),
    }
}

impl Flows {
    /// Signs `email` up and turns a second factor on: (owner, seed, recovery codes).
    async fn enrolled(&self, clock: &ManualClock, email: &str) -> (Principal, String, Vec<String>) {
        let signed_up = self.signed_up(email, email).await;
        let owner = self
            .flows
            .tokens()
            .verify(&signed_up.tokens.access_token)
            .expect("token");
        let enrollment = self.flows.totp_enroll(&owner).await.expect("enroll");
        let confirmed = self
            .flows
            .totp_confirm(
                &self.client,
                &owner,
                &TotpCode {
                    code: code(&enrollment.secret, clock, 0),
                },
            )
            .await
            .expect("confirm");
        (owner, enrollment.secret, confirmed.recovery_codes)
    }

    /// Logs `email` in: the pending sign-in's token (a second factor is due).
    async fn pending(&self, email: &str) -> String {
        match self
            .flows
            .login(&self.client, login(email))
            .await
            .expect("login")
        {
            SignIn::MfaRequired { mfa_token, .. } => mfa_token,
            SignIn::Complete(_) => panic!("a second factor is on: no session yet"),
            _ => panic!("unexpected outcome"),
        }
    }

    async fn actions(&self, tenant: tenantkit_core::TenantId) -> Vec<String> {
        let mut tx = (self.flows.db())
            .begin(&TenantScope::for_system(tenant))
            .await
            .expect("begin");
        let entries = tx.audit_entries(0, 1000).await.expect("entries");
        tx.commit().await.expect("commit");
        entries.into_iter().map(|e| e.action).collect()
    }

    async fn sessions_of(&self, owner: &Principal) -> i64 {
        let mut tx = self.test_db.db.begin_system_read().await.expect("begin");
        let n: i64 = tenantkit_core::with_conn!(&mut tx, |c| {
            sqlx::query_scalar("SELECT count(*) FROM sessions WHERE user_id = $1")
                .bind(owner.user_id())
                .fetch_one(c)
                .await
        })
        .expect("count");
        tx.commit().await.expect("commit");
        n
    }
}

async fn enrolling_needs_a_code_and_gives_recovery_codes_once(backend: tenantkit_core::Backend) {
    let Some((f, clock)) = mfa_flows(backend, false).await else {
        return;
    };
    let signed_up = f.signed_up("ada@example.com", "Ada").await;
    let owner = f
        .flows
        .tokens()
        .verify(&signed_up.tokens.access_token)
        .expect("token");
    // Confirming before enrolling: nothing waits.
    let early = f
        .flows
        .totp_confirm(
            &f.client,
            &owner,
            &TotpCode {
                code: "123456".into(),
            },
        )
        .await;
    assert!(
        matches!(early, Err(Error::Core(tenantkit_core::Error::Conflict(_)))),
        "{early:?}"
    );
    let first = f.flows.totp_enroll(&owner).await.expect("enroll");
    assert!(
        first
            .otpauth_uri
            .starts_with("otpauth://totp/Tests%3Aada%40example.com?secret=")
    );
    assert!(first.otpauth_uri.contains(&first.secret));
    // Restarting replaces the seed: the first one's codes no longer confirm.
    let second = f.flows.totp_enroll(&owner).await.expect("enroll again");
    assert_ne!(first.secret, second.secret);
    let stale = TotpCode {
        code: code(&first.secret, &clock, 0),
    };
    let refused = f.flows.totp_confirm(&f.client, &owner, &stale).await;
    assert!(matches!(refused, Err(Error::InvalidCode)), "{refused:?}");
    for bad in ["000000", "12345", "abcdef", ""] {
        let refused = f
            .flows
            .totp_confirm(&f.client, &owner, &TotpCode { code: bad.into() })
            .await;
        assert!(
            matches!(refused, Err(Error::InvalidCode)),
            "{bad:?}: {refused:?}"
        );
    }
    let codes = f
        .flows
        .totp_confirm(
            &f.client,
            &owner,
            &TotpCode {
                code: code(&second.secret, &clock, 0),
            },
        )
        .await
        .expect("confirm")
        .recovery_codes;
    assert_eq!(codes.len(), 10);
    // On: enrolling again or confirming again is a conflict; nothing stored is replaced.
    let again = f.flows.totp_enroll(&owner).await;
    assert!(
        matches!(again, Err(Error::Core(tenantkit_core::Error::Conflict(_)))),
        "{again:?}"
    );
    let again = f
        .flows
        .totp_confirm(
            &f.client,
            &owner,
            &TotpCode {
                code: code(&second.secret, &clock, 1),
            },
        )
        .await;
    assert!(
        matches!(again, Err(Error::Core(tenantkit_core::Error::Conflict(_)))),
        "{again:?}"
    );
    // The seed is stored sealed, never as the base32 the user saw.
    let mut tx = f.test_db.db.begin_system_read().await.expect("begin");
    let stored: Vec<String> = tenantkit_core::with_conn!(&mut tx, |c| {
        sqlx::query_scalar("SELECT secret FROM mfa_totp")
            .fetch_all(c)
            .await
    })
    .expect("read");
    tx.commit().await.expect("commit");
    assert_eq!(stored.len(), 1);
    assert!(stored[0].starts_with("v1.test.") && !stored[0].contains(&second.secret));
}

async fn a_login_waits_for_the_second_factor(backend: tenantkit_core::Backend) {
    let Some((f, clock)) = mfa_flows(backend, false).await else {
        return;
    };
    let (owner, secret, _) = f.enrolled(&clock, "bo@example.com").await;
    let before = f.sessions_of(&owner).await;
    let token = f.pending("bo@example.com").await;
    assert_eq!(
        f.sessions_of(&owner).await,
        before,
        "no session before the second factor"
    );

    // The code the confirmation used is spent: a replay is refused, and the token survives.
    let replay = f
        .flows
        .mfa_verify(&f.client, &with_code(&token, code(&secret, &clock, 0)))
        .await;
    assert!(matches!(replay, Err(Error::InvalidCode)), "{replay:?}");
    // Two steps ahead is outside the skew.
    let ahead = f
        .flows
        .mfa_verify(&f.client, &with_code(&token, code(&secret, &clock, 2)))
        .await;
    assert!(matches!(ahead, Err(Error::InvalidCode)), "{ahead:?}");
    // Neither both factors nor none.
    let both = MfaVerify {
        mfa_token: token.clone(),
        code: Some(code(&secret, &clock, 1)),
        recovery_code: Some("x".into()),
    };
    assert!(matches!(
        f.flows.mfa_verify(&f.client, &both).await,
        Err(Error::Core(tenantkit_core::Error::Validation(_)))
    ));

    // One step ahead (the authenticator's clock runs a little fast): signed in, with `otp`.
    let next = code(&secret, &clock, 1);
    let done = f
        .flows
        .mfa_verify(&f.client, &with_code(&token, next.clone()))
        .await
        .expect("verified");
    let caller = f
        .flows
        .tokens()
        .verify(&done.tokens.access_token)
        .expect("token");
    assert_eq!(caller.amr(), [amr::PASSWORD, amr::OTP]);
    assert_eq!(caller.user_id(), owner.user_id());
    assert_eq!(done.memberships.len(), 1);
    assert_eq!(f.sessions_of(&owner).await, before + 1);
    // The token is spent, and so is the code, also with a new token.
    let again = f
        .flows
        .mfa_verify(&f.client, &with_code(&token, next.clone()))
        .await;
    assert!(matches!(again, Err(Error::InvalidToken(_))), "{again:?}");
    let token = f.pending("bo@example.com").await;
    let again = f
        .flows
        .mfa_verify(&f.client, &with_code(&token, next))
        .await;
    assert!(matches!(again, Err(Error::InvalidCode)), "{again:?}");
    // A later step works (its own code, once).
    clock.advance(Duration::from_secs(60));
    f.flows
        .mfa_verify(&f.client, &with_code(&token, code(&secret, &clock, 0)))
        .await
        .expect("a later code");
    // Unknown and malformed tokens.
    for bogus in ["", "mfa_", "nope", &"mfa_x".repeat(50)] {
        let refused = f
            .flows
            .mfa_verify(&f.client, &with_code(bogus, code(&secret, &clock, 1)))
            .await;
        assert!(
            matches!(refused, Err(Error::InvalidToken(_))),
            "{bogus:?}: {refused:?}"
        );
    }
}

async fn recovery_codes_work_once_each(backend: tenantkit_core::Backend) {
    let Some((f, clock)) = mfa_flows(backend, false).await else {
        return;
    };
    let (owner, _, codes) = f.enrolled(&clock, "cy@example.com").await;
    let token = f.pending("cy@example.com").await;
    // Case, dashes and spaces do not matter.
    let typed = codes[0].to_uppercase().replace('-', " ");
    let done = f
        .flows
        .mfa_verify(&f.client, &with_recovery(&token, &typed))
        .await
        .expect("recovery code");
    assert!(f.flows.tokens().verify(&done.tokens.access_token).is_ok());
    let token = f.pending("cy@example.com").await;
    let reused = f
        .flows
        .mfa_verify(&f.client, &with_recovery(&token, &codes[0]))
        .await;
    assert!(matches!(reused, Err(Error::InvalidCode)), "{reused:?}");
    f.flows
        .mfa_verify(&f.client, &with_recovery(&token, &codes[1]))
        .await
        .expect("another recovery code");
    // Another account's recovery code is nobody's here.
    let (_, _, other_codes) = f.enrolled(&clock, "dee@example.com").await;
    let token = f.pending("cy@example.com").await;
    let foreign = f
        .flows
        .mfa_verify(&f.client, &with_recovery(&token, &other_codes[0]))
        .await;
    assert!(matches!(foreign, Err(Error::InvalidCode)), "{foreign:?}");
    let audited = f.actions(owner.tenant_id()).await;
    assert_eq!(
        audited
            .iter()
            .filter(|a| *a == "auth.mfa_recovery_code_used")
            .count(),
        2,
        "{audited:?}"
    );
    assert!(
        audited.iter().any(|a| a == "auth.mfa_failed"),
        "{audited:?}"
    );
    assert!(
        audited.iter().any(|a| a == "auth.mfa_enabled"),
        "{audited:?}"
    );
}

async fn a_pending_sign_in_expires_and_survives_five_wrong_codes_only(
    backend: tenantkit_core::Backend,
) {
    let Some((f, clock)) = mfa_flows(backend, false).await else {
        return;
    };
    let (_, secret, _) = f.enrolled(&clock, "eve@example.com").await;
    // Expiry: five minutes.
    let token = f.pending("eve@example.com").await;
    clock.advance(Duration::from_secs(5 * 60 + 1));
    let late = f
        .flows
        .mfa_verify(&f.client, &with_code(&token, code(&secret, &clock, 0)))
        .await;
    assert!(matches!(late, Err(Error::InvalidToken(_))), "{late:?}");
    // Five wrong codes drop it: the right one is refused after them.
    let token = f.pending("eve@example.com").await;
    for _ in 0..5 {
        let wrong = f
            .flows
            .mfa_verify(&f.client, &with_code(&token, "000000".into()))
            .await;
        assert!(matches!(wrong, Err(Error::InvalidCode)), "{wrong:?}");
    }
    let dropped = f
        .flows
        .mfa_verify(&f.client, &with_code(&token, code(&secret, &clock, 0)))
        .await;
    assert!(
        matches!(dropped, Err(Error::InvalidToken(_))),
        "{dropped:?}"
    );
    // A password reset (or "log out everywhere") between the steps: no session comes of it.
    let token = f.pending("eve@example.com").await;
    let user = f
        .flows
        .db()
        .find_user_by_email(&tenantkit_core::Email::parse("eve@example.com").expect("email"))
        .await
        .expect("read")
        .expect("user");
    let mut tx = f.flows.db().begin_system().await.expect("begin");
    tx.bump_credentials_epoch(user.id).await.expect("bump");
    tx.commit().await.expect("commit");
    let stale = f
        .flows
        .mfa_verify(&f.client, &with_code(&token, code(&secret, &clock, 0)))
        .await;
    assert!(matches!(stale, Err(Error::InvalidCredentials)), "{stale:?}");
}

async fn codes_are_rate_limited_per_account(backend: tenantkit_core::Backend) {
    let Some((f, clock)) = mfa_flows(backend, true).await else {
        return;
    };
    let (_, secret, _) = f.enrolled(&clock, "fay@example.com").await;
    let mut limited = false;
    // At most 10 code checks a minute per account (the confirmation was one), across tokens.
    for _ in 0..4 {
        let token = f.pending("fay@example.com").await;
        for _ in 0..4 {
            match f
                .flows
                .mfa_verify(&f.client, &with_code(&token, "000000".into()))
                .await
            {
                Err(Error::InvalidCode | Error::InvalidToken(_)) => {}
                Err(Error::RateLimited { .. }) => limited = true,
                other => panic!("{other:?}"),
            }
        }
    }
    assert!(limited, "the account's budget ran out");
    let _ = secret;
}

async fn disabling_needs_a_factor_and_ends_the_second_step(backend: tenantkit_core::Backend) {
    let Some((f, clock)) = mfa_flows(backend, false).await else {
        return;
    };
    let (owner, secret, codes) = f.enrolled(&clock, "gus@example.com").await;
    let none = f
        .flows
        .totp_disable(&f.client, &owner, &SecondFactor::default())
        .await;
    assert!(
        matches!(none, Err(Error::Core(tenantkit_core::Error::Validation(_)))),
        "{none:?}"
    );
    let wrong = SecondFactor {
        code: Some("000000".into()),
        recovery_code: None,
    };
    assert!(matches!(
        f.flows.totp_disable(&f.client, &owner, &wrong).await,
        Err(Error::InvalidCode)
    ));
    // Another account cannot turn it off with its own factor.
    let (other, other_secret, _) = f.enrolled(&clock, "hal@example.com").await;
    clock.advance(Duration::from_secs(30));
    let theirs = SecondFactor {
        code: Some(code(&other_secret, &clock, 0)),
        recovery_code: None,
    };
    assert!(matches!(
        f.flows.totp_disable(&f.client, &owner, &theirs).await,
        Err(Error::InvalidCode)
    ));
    let pending = f.pending("gus@example.com").await;
    let right = SecondFactor {
        code: None,
        recovery_code: Some(codes[3].clone()),
    };
    f.flows
        .totp_disable(&f.client, &owner, &right)
        .await
        .expect("disabled");
    // Off: login signs in at once; the pending sign-in from before is gone.
    assert!(matches!(
        f.flows.login(&f.client, login("gus@example.com")).await,
        Ok(SignIn::Complete(_))
    ));
    let gone = f
        .flows
        .mfa_verify(&f.client, &with_code(&pending, code(&secret, &clock, 0)))
        .await;
    assert!(matches!(gone, Err(Error::InvalidToken(_))), "{gone:?}");
    let again = f.flows.totp_disable(&f.client, &owner, &right).await;
    assert!(
        matches!(again, Err(Error::Core(tenantkit_core::Error::NotFound))),
        "{again:?}"
    );
    // The other account still has its own.
    assert!(matches!(
        f.flows.login(&f.client, login("hal@example.com")).await,
        Ok(SignIn::MfaRequired { .. })
    ));
    let _ = other;
}

async fn without_mfa_configured_an_enrolled_account_is_not_let_through(
    backend: tenantkit_core::Backend,
) {
    let Some((f, clock)) = mfa_flows(backend, false).await else {
        return;
    };
    let (_, secret, _) = f.enrolled(&clock, "ida@example.com").await;
    // The same database, flows without the MFA setting (a misconfigured instance).
    let plain = tenantkit_auth::flows::AuthFlows::new(
        f.test_db.db.clone(),
        f.flows.tokens().clone(),
        f.flows.sessions().clone(),
    )
    .with_limits(Arc::new(RateLimits::new(RateLimitConfig::unlimited())));
    let token = match plain
        .login(&f.client, login("ida@example.com"))
        .await
        .expect("login")
    {
        SignIn::MfaRequired { mfa_token, .. } => mfa_token,
        _ => panic!("still a second factor due"),
    };
    let verify = plain
        .mfa_verify(&f.client, &with_code(&token, code(&secret, &clock, 1)))
        .await;
    assert!(
        matches!(verify, Err(Error::Core(tenantkit_core::Error::NotFound))),
        "{verify:?}"
    );
}

async fn one_code_used_twice_at_once_signs_in_once(backend: tenantkit_core::Backend) {
    let Some((f, clock)) = mfa_flows(backend, false).await else {
        return;
    };
    let (owner, secret, _) = f.enrolled(&clock, "lu@example.com").await;
    let before = f.sessions_of(&owner).await;
    let (first, second) = (
        f.pending("lu@example.com").await,
        f.pending("lu@example.com").await,
    );
    let next = code(&secret, &clock, 1);
    let (one, two) = (with_code(&first, next.clone()), with_code(&second, next));
    let (a, b) = tokio::join!(
        f.flows.mfa_verify(&f.client, &one),
        f.flows.mfa_verify(&f.client, &two),
    );
    // Whichever comes first, the other finds the step used.
    let outcomes = [a.is_ok(), b.is_ok()];
    assert_eq!(
        outcomes.iter().filter(|ok| **ok).count(),
        1,
        "{a:?} / {b:?}"
    );
    for refused in [a, b].into_iter().filter(Result::is_err) {
        assert!(matches!(refused, Err(Error::InvalidCode)), "{refused:?}");
    }
    assert_eq!(f.sessions_of(&owner).await, before + 1);
}

async fn backend(backend: tenantkit_core::Backend) -> Option<tenantkit_core::Backend> {
    Some(backend)
}

async fn an_enrolled_account_joins_only_from_a_session_with_its_second_factor(
    backend: tenantkit_core::Backend,
) {
    let Some((f, clock)) = mfa_flows(backend, false).await else {
        return;
    };
    // Signed in with the password before enrolling: that session has no `otp`.
    let (owner, secret, _) = f.enrolled(&clock, "jo@example.com").await;
    let password_only = owner.clone();
    assert!(!password_only.amr().iter().any(|m| m == amr::OTP));
    let inviter = f.signed_up("kim@example.com", "Kim").await;
    let inviter = f
        .flows
        .tokens()
        .verify(&inviter.tokens.access_token)
        .expect("token");
    let invite = |f: &Flows| {
        let inviter = inviter.clone();
        let client = f.client.clone();
        let flows = f.flows.clone();
        async move {
            flows
                .invite(
                    &client,
                    &inviter,
                    tenantkit_auth::flows::InviteRequest {
                        email: "jo@example.com".into(),
                        role: tenantkit_core::Role::Member,
                    },
                )
                .await
                .expect("invite")
        }
    };
    invite(&f).await;
    let token = f
        .mailed_token_about(
            "jo@example.com",
            Some(tenantkit_auth::flows::INVITATION_SUBJECT),
        )
        .await;
    let accept = |caller: Principal, token: String| {
        let flows = f.flows.clone();
        let client = f.client.clone();
        async move {
            flows
                .accept_invitation(
                    &client,
                    Some(&caller),
                    tenantkit_auth::flows::AcceptInvitation {
                        token,
                        password: None,
                    },
                )
                .await
        }
    };
    let refused = accept(password_only, token.clone()).await;
    assert!(
        matches!(refused, Err(Error::InsufficientAuthentication("otp"))),
        "{refused:?}"
    );
    // Nothing was accepted: the same invitation still works from a session with `otp`.
    let pending = f.pending("jo@example.com").await;
    clock.advance(Duration::from_secs(30));
    let done = f
        .flows
        .mfa_verify(&f.client, &with_code(&pending, code(&secret, &clock, 0)))
        .await
        .expect("second factor");
    let with_otp = f
        .flows
        .tokens()
        .verify(&done.tokens.access_token)
        .expect("token");
    let joined = accept(with_otp, token)
        .await
        .expect("joined")
        .into_complete()
        .expect("signed in");
    assert_eq!(joined.tenant_id, inviter.tenant_id());
}

impl Flows {
    /// Sets "MFA required" on the caller's tenant, in a transaction of that tenant.
    async fn require_mfa(
        &self,
        caller: &Principal,
        on: bool,
    ) -> Result<tenantkit_auth::flows::TenantPolicy, Error> {
        let mut tx = (self.flows.db())
            .begin(&TenantScope::of(caller))
            .await
            .expect("begin");
        let policy = self
            .flows
            .update_tenant_policy(
                &mut tx,
                &self.client,
                caller,
                TenantPolicyPatch::mfa_required(on),
            )
            .await?;
        tx.commit().await.expect("commit");
        Ok(policy)
    }

    /// `token`'s verified caller.
    fn caller(&self, token: &str) -> Principal {
        self.flows.tokens().verify(token).expect("token")
    }

    /// Accepts the invitation mailed to `email` with `caller`'s session, or as a new account.
    async fn accept(
        &self,
        email: &str,
        caller: Option<&Principal>,
    ) -> Result<SignIn<tenantkit_auth::flows::Joined>, Error> {
        let token = self
            .mailed_token_about(email, Some(tenantkit_auth::flows::INVITATION_SUBJECT))
            .await;
        self.flows
            .accept_invitation(
                &self.client,
                caller,
                AcceptInvitation {
                    token,
                    password: caller.is_none().then(|| Password::new(PASSWORD)),
                },
            )
            .await
    }

    async fn invite(&self, inviter: &Principal, email: &str) {
        self.flows
            .invite(
                &self.client,
                inviter,
                InviteRequest {
                    email: email.into(),
                    role: tenantkit_core::Role::Member,
                },
            )
            .await
            .expect("invite");
    }
}

async fn a_tenant_that_requires_a_second_factor_has_every_sign_in_give_one(
    backend: tenantkit_core::Backend,
) {
    let Some((f, clock)) = mfa_flows(backend, false).await else {
        return;
    };
    let (owner_pwd, secret, _) = f.enrolled(&clock, "own@example.com").await;
    // A member (password only), and an account of another tenant that also joins this one.
    let (_, member) = f.invite_and_accept(&owner_pwd, "mem@example.com").await;
    let member_caller = f.caller(&member.tokens.access_token);
    let other = f.signed_up("oth@example.com", "Other").await;
    let other_caller = f.caller(&other.tokens.access_token);
    f.invite(&owner_pwd, "oth@example.com").await;
    let joined = f.accept("oth@example.com", Some(&other_caller)).await;
    assert!(matches!(joined, Ok(SignIn::Complete(_))), "{joined:?}");

    // Only the owner sets the policy, and only from a session that gave a second factor.
    let refused = f.require_mfa(&member_caller, true).await;
    assert!(
        matches!(refused, Err(Error::Core(tenantkit_core::Error::Forbidden))),
        "{refused:?}"
    );
    let refused = f.require_mfa(&owner_pwd, true).await;
    assert!(
        matches!(refused, Err(Error::InsufficientAuthentication("otp"))),
        "{refused:?}"
    );
    let pending = f.pending("own@example.com").await;
    clock.advance(Duration::from_secs(30));
    let owner_otp = f
        .flows
        .mfa_verify(&f.client, &with_code(&pending, code(&secret, &clock, 0)))
        .await
        .expect("second factor");
    let owner = f.caller(&owner_otp.tokens.access_token);
    let policy = f.require_mfa(&owner, true).await.expect("policy");
    assert!(policy.mfa_required);
    assert!(
        f.actions(owner.tenant_id())
            .await
            .contains(&"tenant.policy_changed".to_owned())
    );

    // The tenant's sessions without a second factor ended (the owner's password-only one
    // too); the owner's session with one, and the other account's own tenant, did not.
    let refused = f
        .flows
        .refresh(
            &f.client,
            &RefreshToken::new(member.tokens.refresh_token.clone()),
        )
        .await;
    assert!(refused.is_err(), "{refused:?}");
    let sessions = f.flows.sessions();
    assert!(
        sessions
            .is_over(owner_pwd.session_id())
            .await
            .expect("read")
    );
    assert!(
        sessions
            .is_over(member_caller.session_id())
            .await
            .expect("read")
    );
    assert!(!sessions.is_over(owner.session_id()).await.expect("read"));
    f.flows
        .refresh(
            &f.client,
            &RefreshToken::new(owner_otp.tokens.refresh_token.clone()),
        )
        .await
        .expect("the owner's session with a second factor goes on");
    f.flows
        .refresh(
            &f.client,
            &RefreshToken::new(other.tokens.refresh_token.clone()),
        )
        .await
        .expect("a session in another tenant goes on");

    // A member without a second factor: enrollment first, with a token that does nothing else.
    let mfa_token = match f.flows.login(&f.client, login("mem@example.com")).await {
        Ok(SignIn::MfaEnrollmentRequired { mfa_token, .. }) => mfa_token,
        other => panic!("enrollment is due: {other:?}"),
    };
    let refused = f
        .flows
        .mfa_verify(&f.client, &with_code(&mfa_token, "123456".into()))
        .await;
    assert!(
        matches!(refused, Err(Error::InvalidToken(_))),
        "{refused:?}"
    );
    let pending_enrollment = PendingEnrollment {
        mfa_token: mfa_token.clone(),
    };
    let seed = f
        .flows
        .mfa_enroll_pending(&f.client, &pending_enrollment)
        .await
        .expect("enroll");
    let confirm = |code: String| PendingConfirmation {
        mfa_token: mfa_token.clone(),
        code,
    };
    let refused = f
        .flows
        .mfa_confirm_pending(&f.client, &confirm("000000".into()))
        .await;
    assert!(matches!(refused, Err(Error::InvalidCode)), "{refused:?}");
    let done = f
        .flows
        .mfa_confirm_pending(&f.client, &confirm(code(&seed.secret, &clock, 0)))
        .await
        .expect("enrolled and signed in");
    assert_eq!(done.recovery_codes.len(), 10);
    let signed_in = f.caller(&done.signed_in.tokens.access_token);
    assert_eq!(signed_in.tenant_id(), owner.tenant_id());
    assert!(signed_in.has_amr(amr::OTP) && signed_in.has_amr(amr::PASSWORD));
    // The token was used up; the account now has a second factor like any other.
    let again = f
        .flows
        .mfa_confirm_pending(&f.client, &confirm(code(&seed.secret, &clock, 1)))
        .await;
    assert!(matches!(again, Err(Error::InvalidToken(_))), "{again:?}");
    let again = f
        .flows
        .mfa_enroll_pending(&f.client, &pending_enrollment)
        .await;
    assert!(matches!(again, Err(Error::InvalidToken(_))), "{again:?}");
    let verify_token = f.pending("mem@example.com").await;
    // A token for a code does not enroll either.
    let misused = f
        .flows
        .mfa_enroll_pending(
            &f.client,
            &PendingEnrollment {
                mfa_token: verify_token.clone(),
            },
        )
        .await;
    assert!(
        matches!(misused, Err(Error::InvalidToken(_))),
        "{misused:?}"
    );
    let misused = f
        .flows
        .mfa_confirm_pending(
            &f.client,
            &PendingConfirmation {
                mfa_token: verify_token,
                code: code(&seed.secret, &clock, 0),
            },
        )
        .await;
    assert!(
        matches!(misused, Err(Error::InvalidToken(_))),
        "{misused:?}"
    );
    let actions = f.actions(owner.tenant_id()).await;
    assert!(
        actions.contains(&"auth.mfa_enabled".to_owned()),
        "{actions:?}"
    );
    assert!(
        actions.contains(&"auth.mfa_failed".to_owned()),
        "{actions:?}"
    );

    // A tenant switch from a session without a second factor is refused.
    let refused = f
        .flows
        .switch_tenant(
            &f.client,
            &other_caller,
            SwitchTenant {
                tenant_id: owner.tenant_id().to_string(),
            },
        )
        .await;
    assert!(
        matches!(refused, Err(Error::InsufficientAuthentication("otp"))),
        "{refused:?}"
    );
    // An existing account joins only from a session with a second factor; a new account
    // joins and is asked to enroll.
    let third = f.signed_up("thr@example.com", "Third").await;
    f.invite(&owner, "thr@example.com").await;
    let refused = f
        .accept(
            "thr@example.com",
            Some(&f.caller(&third.tokens.access_token)),
        )
        .await;
    assert!(
        matches!(refused, Err(Error::InsufficientAuthentication("otp"))),
        "{refused:?}"
    );
    f.invite(&owner, "new@example.com").await;
    let joined = f.accept("new@example.com", None).await;
    assert!(
        matches!(joined, Ok(SignIn::MfaEnrollmentRequired { .. })),
        "{joined:?}"
    );

    // Off again: a password sign-in into the tenant is complete once more.
    assert!(
        !f.require_mfa(&owner, false)
            .await
            .expect("off")
            .mfa_required
    );
    let complete = f.flows.login(&f.client, login("new@example.com")).await;
    assert!(matches!(complete, Ok(SignIn::Complete(_))), "{complete:?}");
}

tenantkit_core::backend_tests!(
    fixture = backend;
    enrolling_needs_a_code_and_gives_recovery_codes_once,
    a_login_waits_for_the_second_factor,
    recovery_codes_work_once_each,
    a_pending_sign_in_expires_and_survives_five_wrong_codes_only,
    codes_are_rate_limited_per_account,
    disabling_needs_a_factor_and_ends_the_second_step,
    without_mfa_configured_an_enrolled_account_is_not_let_through,
    an_enrolled_account_joins_only_from_a_session_with_its_second_factor,
    a_tenant_that_requires_a_second_factor_has_every_sign_in_give_one,
    one_code_used_twice_at_once_signs_in_once
);
