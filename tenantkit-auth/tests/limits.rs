//! Rate limits behind the [`AuthLimits`] trait: a custom implementation plugged into the flows
//! with `AuthFlows::with_limits` decides for them (a store shared by several instances can
//! replace the in-memory default), on both backends.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tenantkit_auth::flows::{LoginRequest, SignupOutcome, SignupRequest};
use tenantkit_auth::{Attempt, AuthLimits, Error, LimitFuture, Password, problem_response};
use tenantkit_core::{TenantId, UserId};

mod support;

use support::{Flows, PASSWORD};

/// Refuses everything, and records what it was asked.
#[derive(Debug, Default)]
struct Calls(Mutex<Vec<String>>);

impl Calls {
    fn push(&self, call: String) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(call);
    }

    fn taken(&self) -> Vec<String> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// A limiter that answers every check with `refuse` (or lets everything through when `None`),
/// recording each call.
#[derive(Debug, Default)]
struct Scripted {
    refuse: Option<Duration>,
    /// Answers every check with [`Error::LimitsUnavailable`], as a shared store that is down.
    store_down: bool,
    calls: Calls,
}

impl Scripted {
    fn answer(&self, call: String) -> LimitFuture<'_> {
        self.calls.push(call);
        let answer = match (self.store_down, self.refuse) {
            (true, _) => Err(Error::LimitsUnavailable("store unreachable".into())),
            (false, Some(retry_after)) => Err(Error::RateLimited { retry_after }),
            (false, None) => Ok(()),
        };
        // A real store answers later: yield once so the flows truly await the answer.
        Box::pin(async move {
            tokio::task::yield_now().await;
            answer
        })
    }
}

impl AuthLimits for Scripted {
    fn check(&self, attempt: Attempt, ip: IpAddr) -> LimitFuture<'_> {
        self.answer(format!("check {attempt:?} {ip}"))
    }

    fn check_login<'a>(&'a self, account: &'a str, ip: IpAddr) -> LimitFuture<'a> {
        self.answer(format!("check_login {account} {ip}"))
    }

    fn record_login_failure<'a>(&'a self, account: &'a str, ip: IpAddr) -> LimitFuture<'a> {
        self.answer(format!("failure {account} {ip}"))
    }

    fn record_login_success<'a>(&'a self, account: &'a str, ip: IpAddr) -> LimitFuture<'a> {
        self.calls.push(format!("success {account} {ip}"));
        Box::pin(async { Ok(()) })
    }

    fn check_reset<'a>(&'a self, account: &'a str) -> LimitFuture<'a> {
        self.answer(format!("check_reset {account}"))
    }

    fn check_account_action(&self, kind: &'static str, _user: UserId) -> LimitFuture<'_> {
        self.answer(format!("check_account_action {kind}"))
    }

    fn check_invitation(&self, _tenant: TenantId, _inviter: UserId) -> LimitFuture<'_> {
        self.answer("check_invitation".to_owned())
    }
}

fn login(email: &str, password: &str) -> LoginRequest {
    LoginRequest {
        email: email.into(),
        password: Password::new(password),
        tenant: None,
    }
}

/// A limiter that refuses everything refuses logins through the flows: 429 `rate_limited`
/// with its `Retry-After`, before any password work, even for the right password.
async fn a_plugged_limiter_that_refuses_everything_answers_logins_429(f: Flows) {
    let open = f.flows.clone();
    let outcome = open
        .signup(
            &f.client,
            SignupRequest {
                email: "limited@example.com".into(),
                password: Password::new(PASSWORD),
                tenant_name: "Limits".into(),
                tenant_slug: None,
            },
        )
        .await
        .expect("signup with the default limits");
    assert!(matches!(outcome, SignupOutcome::SignedIn(_)), "{outcome:?}");

    let refusing = Arc::new(Scripted {
        refuse: Some(Duration::from_secs(42)),
        ..Scripted::default()
    });
    let flows = f.flows.clone().with_limits(refusing.clone());
    let hashes_before = flows.passwords().stats().started;
    let err = flows
        .login(&f.client, login("limited@example.com", PASSWORD))
        .await
        .expect_err("the plugged limiter refuses");
    assert!(
        matches!(err, Error::RateLimited { retry_after } if retry_after == Duration::from_secs(42)),
        "{err:?}"
    );
    let response: http::Response<bytes::Bytes> = problem_response(&err);
    assert_eq!(response.status(), http::StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[http::header::RETRY_AFTER], "42");
    let body: serde_json::Value = serde_json::from_slice(response.body()).expect("json");
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(
        flows.passwords().stats().started,
        hashes_before,
        "refused before any password work"
    );
    assert_eq!(
        refusing.calls.taken(),
        vec![format!("check Login {}", f.client.ip)]
    );
    // The default limits of the original flows are untouched by the swap.
    assert!(
        f.flows
            .login(&f.client, login("limited@example.com", PASSWORD))
            .await
            .is_ok()
    );
}

/// The flows report failures and successes to the plugged limiter (what a shared store needs
/// to count), with the account string as typed.
async fn a_plugged_limiter_sees_login_failures_and_successes(f: Flows) {
    f.flows
        .signup(
            &f.client,
            SignupRequest {
                email: "counted@example.com".into(),
                password: Password::new(PASSWORD),
                tenant_name: "Limits".into(),
                tenant_slug: None,
            },
        )
        .await
        .expect("signup");
    let recording = Arc::new(Scripted::default());
    let flows = f.flows.clone().with_limits(recording.clone());
    let ip = f.client.ip;

    let wrong = flows
        .login(
            &f.client,
            login("Counted@example.com", "not the password at all"),
        )
        .await;
    assert!(matches!(wrong, Err(Error::InvalidCredentials)), "{wrong:?}");
    assert_eq!(
        recording.calls.taken(),
        vec![
            format!("check Login {ip}"),
            format!("check_login Counted@example.com {ip}"),
            format!("failure Counted@example.com {ip}"),
        ]
    );

    let right = flows
        .login(&f.client, login("counted@example.com", PASSWORD))
        .await;
    assert!(right.is_ok(), "{right:?}");
    let calls = recording.calls.taken();
    assert_eq!(
        calls[..3],
        [
            format!("check Login {ip}"),
            format!("check_login counted@example.com {ip}"),
            format!("success counted@example.com {ip}"),
        ],
        "{calls:?}"
    );
}

/// A shared store that is down fails closed: logins, signups and reset requests answer 503
/// `service_unavailable` (never a 500, never let through unlimited), before any password work;
/// verifying the access tokens already issued still works (it never consults the limits).
async fn a_limiter_whose_store_is_down_fails_closed_with_503(f: Flows) {
    let signed_up = f
        .flows
        .signup(
            &f.client,
            SignupRequest {
                email: "down@example.com".into(),
                password: Password::new(PASSWORD),
                tenant_name: "Limits".into(),
                tenant_slug: None,
            },
        )
        .await
        .expect("signup with the default limits");
    let SignupOutcome::SignedIn(pair) = signed_up else {
        panic!("{signed_up:?}");
    };
    let down = Arc::new(Scripted {
        store_down: true,
        ..Scripted::default()
    });
    let flows = f.flows.clone().with_limits(down.clone());
    let hashes_before = flows.passwords().stats().started;

    let login = flows
        .login(&f.client, login("down@example.com", PASSWORD))
        .await
        .expect_err("no login while the limits cannot be checked");
    let signup = flows
        .signup(
            &f.client,
            SignupRequest {
                email: "new@example.com".into(),
                password: Password::new(PASSWORD),
                tenant_name: "Limits".into(),
                tenant_slug: None,
            },
        )
        .await
        .expect_err("no signup either");
    let reset = flows
        .request_password_reset(
            &f.client,
            tenantkit_auth::flows::ResetRequest {
                email: "down@example.com".into(),
            },
        )
        .await
        .expect_err("no reset mail either");
    for err in [login, signup, reset] {
        assert!(matches!(err, Error::LimitsUnavailable(_)), "{err:?}");
        let response: http::Response<bytes::Bytes> = problem_response(&err);
        assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        let body: serde_json::Value = serde_json::from_slice(response.body()).expect("json");
        assert_eq!(body["code"], "service_unavailable");
        assert!(
            !body.to_string().contains("store unreachable"),
            "the reason is for logs only: {body}"
        );
    }
    assert_eq!(
        flows.passwords().stats().started,
        hashes_before,
        "refused before any password work"
    );
    assert!(
        flows.tokens().verify(&pair.tokens.access_token).is_ok(),
        "issued tokens keep verifying"
    );
}

tenantkit_core::backend_tests!(
    fixture = support::flows;
    a_plugged_limiter_that_refuses_everything_answers_logins_429,
    a_limiter_whose_store_is_down_fails_closed_with_503,
    a_plugged_limiter_sees_login_failures_and_successes,
);
