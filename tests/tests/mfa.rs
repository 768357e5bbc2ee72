//! The second factor through the reference server's HTTP API, with codes from an independent
//! TOTP implementation (PyPI `pyotp`, in the test venv scripts/test.sh makes): enrollment and
//! its `otpauth://` URI as an authenticator app reads it, confirmation, `401 mfa_required` with
//! an `mfa_token` at login (and no token pair), the second step with a code and with a recovery
//! code, replays refused, bad bodies answered with problems, and disabling.
//!
//! Codes follow the real clock (the server's). Each one is computed right before the request
//! that uses it, for a step no earlier code used (waiting for the next step when both the
//! current and the next one are spent), so a code is always within the server's one step of
//! skew when it arrives: nothing here races a step boundary.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantkit_core::testing::required_service;
use tenantkit_e2e::{PASSWORD, TestServer};

/// Codes from pyotp for one seed, each for a step later than the last one given.
struct Authenticator {
    python: String,
    secret: String,
    last_step: Mutex<u64>,
}

fn now_step() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        / 30
}

impl Authenticator {
    /// pyotp's reading of the enrollment URI (as an authenticator app scans it).
    fn from_uri(python: &str, uri: &str) -> Self {
        let out = pyotp(
            python,
            "import pyotp, sys; t = pyotp.parse_uri(sys.argv[1]); print(t.secret, t.digits, t.interval, t.digest().name, t.issuer)",
            &[uri],
        );
        let fields: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(&fields[1..], ["6", "30", "sha1", "tenantkit"], "{out}");
        Self {
            python: python.to_owned(),
            secret: fields[0].to_owned(),
            last_step: Mutex::new(0),
        }
    }

    /// A code for the earliest step that is current or next and not yet used.
    async fn code(&self) -> String {
        loop {
            let now = now_step();
            let step = {
                let mut last = self.last_step.lock().expect("lock");
                let step = now.max(*last + 1);
                if step <= now + 1 {
                    *last = step;
                    Some(step)
                } else {
                    None
                }
            };
            if let Some(step) = step {
                let at = (step * 30).to_string();
                return pyotp(
                    &self.python,
                    "import pyotp, sys; print(pyotp.TOTP(sys.argv[1]).at(int(sys.argv[2])))",
                    &[&self.secret, &at],
                );
            }
            // Both the current and the next step are spent: wait for the next one.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The code of the step last given (already used).
    fn last_code(&self) -> String {
        let step = *self.last_step.lock().expect("lock");
        pyotp(
            &self.python,
            "import pyotp, sys; print(pyotp.TOTP(sys.argv[1]).at(int(sys.argv[2])))",
            &[&self.secret, &(step * 30).to_string()],
        )
    }
}

fn pyotp(python: &str, script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python with pyotp");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

async fn login(server: &TestServer, email: &str) -> tenantkit_e2e::Reply {
    server
        .call(
            None,
            Method::POST,
            "/v1/auth/login",
            Some(json!({"email": email, "password": PASSWORD})),
        )
        .await
}

async fn verify(server: &TestServer, body: Value) -> tenantkit_e2e::Reply {
    server
        .call(None, Method::POST, "/v1/auth/mfa/verify", Some(body))
        .await
}

async fn a_second_factor_through_the_api(server: TestServer) {
    let Some(python) = required_service("TENANTKIT_TEST_STRIPE_PYTHON", "TOTP (pyotp)") else {
        return;
    };
    let email = "mfa-owner@example.com";
    let signed_up = server.signup(email, "mfa-owner").await;
    let access = signed_up["access_token"].as_str().expect("token");
    let enroll = "/v1/auth/mfa/totp";

    // Enrollment needs a caller.
    let anonymous = server.call(None, Method::POST, enroll, None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let enrolled = server
        .call_with_token(Some(access), Method::POST, enroll, None)
        .await;
    assert_eq!(enrolled.status, StatusCode::CREATED, "{}", enrolled.body);
    assert_eq!(enrolled.headers["cache-control"], "no-store");
    let uri = enrolled.body["otpauth_uri"].as_str().expect("uri");
    let app = Authenticator::from_uri(&python, uri);
    assert_eq!(enrolled.body["secret"], app.secret.as_str());

    // Confirmation: bad bodies are problems, a wrong code is refused, the right one answers
    // ten recovery codes.
    let confirm = "/v1/auth/mfa/totp/confirm";
    for (body, status) in [
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"code": 123_456}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"code": "123456", "extra": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"code": "000000"}), StatusCode::UNAUTHORIZED),
        (json!({"code": "x".repeat(5000)}), StatusCode::UNAUTHORIZED),
    ] {
        let reply = server
            .call_with_token(Some(access), Method::POST, confirm, Some(body.clone()))
            .await;
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
        assert!(reply.body["code"].is_string(), "a problem: {}", reply.body);
    }
    let confirmed = server
        .call_with_token(
            Some(access),
            Method::POST,
            confirm,
            Some(json!({"code": app.code().await})),
        )
        .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.body);
    assert_eq!(confirmed.headers["cache-control"], "no-store");
    let recovery: Vec<String> =
        serde_json::from_value(confirmed.body["recovery_codes"].clone()).expect("recovery codes");
    assert_eq!(recovery.len(), 10);

    // Login: 401 mfa_required with a token to continue, and no token pair.
    let pending = login(&server, email).await;
    assert_eq!(pending.status, StatusCode::UNAUTHORIZED, "{}", pending.body);
    assert_eq!(pending.body["code"], "mfa_required");
    assert_eq!(pending.headers["cache-control"], "no-store");
    assert!(
        pending.body.get("access_token").is_none() && pending.body.get("refresh_token").is_none()
    );
    let mfa_token = pending.body["mfa_token"]
        .as_str()
        .expect("mfa_token")
        .to_owned();

    // The confirmation's code again: refused (each code once); the token survives it.
    let replay = verify(
        &server,
        json!({"mfa_token": mfa_token, "code": app.last_code()}),
    )
    .await;
    assert_eq!(
        (replay.status, replay.body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_credentials")),
        "{}",
        replay.body
    );
    for body in [
        json!({"mfa_token": mfa_token}),
        json!({"mfa_token": mfa_token, "code": "1", "recovery_code": "2"}),
        json!({"code": "123456"}),
    ] {
        let reply = verify(&server, body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            reply.body
        );
    }
    let done = verify(
        &server,
        json!({"mfa_token": mfa_token, "code": app.code().await}),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.headers["cache-control"], "no-store");
    let access = done.body["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();
    let caller = server.tokens.verify(&access).expect("a valid token");
    assert_eq!(caller.amr(), ["pwd", "otp"]);
    let me = server
        .call_with_token(Some(&access), Method::GET, "/v1/me", None)
        .await;
    assert_eq!(me.status, StatusCode::OK);
    // The token was used up.
    let again = verify(&server, json!({"mfa_token": mfa_token, "code": "123456"})).await;
    assert_eq!(
        (again.status, again.body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );

    // A recovery code, as typed by a person, once.
    let pending = login(&server, email).await;
    let mfa_token = pending.body["mfa_token"]
        .as_str()
        .expect("mfa_token")
        .to_owned();
    let typed = recovery[0].to_uppercase();
    let done = verify(
        &server,
        json!({"mfa_token": mfa_token, "recovery_code": typed}),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let pending = login(&server, email).await;
    let mfa_token = pending.body["mfa_token"]
        .as_str()
        .expect("mfa_token")
        .to_owned();
    let reused = verify(
        &server,
        json!({"mfa_token": mfa_token, "recovery_code": recovery[0]}),
    )
    .await;
    assert_eq!(reused.status, StatusCode::UNAUTHORIZED);

    // Disabling needs a factor; then login signs in at once.
    let disable = |body: Value| {
        let access = access.clone();
        let server = &server;
        async move {
            server
                .call_with_token(Some(&access), Method::DELETE, enroll, Some(body))
                .await
        }
    };
    assert_eq!(
        disable(json!({})).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        disable(json!({"code": "000000"})).await.status,
        StatusCode::UNAUTHORIZED
    );
    let off = disable(json!({"recovery_code": recovery[1]})).await;
    assert_eq!(off.status, StatusCode::NO_CONTENT, "{}", off.body);
    let plain = login(&server, email).await;
    assert_eq!(plain.status, StatusCode::OK, "{}", plain.body);
    assert!(plain.body["access_token"].is_string());
    assert_eq!(
        disable(json!({"recovery_code": recovery[2]})).await.status,
        StatusCode::NOT_FOUND
    );
}

/// Another account's pending sign-in and codes are no way in.
async fn pending_sign_ins_are_per_account(server: TestServer) {
    let Some(python) = required_service("TENANTKIT_TEST_STRIPE_PYTHON", "TOTP (pyotp)") else {
        return;
    };
    let mut apps = Vec::new();
    for email in ["mfa-a@example.com", "mfa-b@example.com"] {
        let signed_up = server.signup(email, &email[..5]).await;
        let access = signed_up["access_token"].as_str().expect("token");
        let enrolled = server
            .call_with_token(Some(access), Method::POST, "/v1/auth/mfa/totp", None)
            .await;
        let app =
            Authenticator::from_uri(&python, enrolled.body["otpauth_uri"].as_str().expect("uri"));
        let confirmed = server
            .call_with_token(
                Some(access),
                Method::POST,
                "/v1/auth/mfa/totp/confirm",
                Some(json!({"code": app.code().await})),
            )
            .await;
        assert_eq!(confirmed.status, StatusCode::OK);
        apps.push(app);
    }
    let pending = login(&server, "mfa-a@example.com").await;
    let a_token = pending.body["mfa_token"]
        .as_str()
        .expect("mfa_token")
        .to_owned();
    // B's current code on A's pending sign-in: refused.
    let crossed = verify(
        &server,
        json!({"mfa_token": a_token, "code": apps[1].code().await}),
    )
    .await;
    assert_eq!(crossed.status, StatusCode::UNAUTHORIZED, "{}", crossed.body);
    let done = verify(
        &server,
        json!({"mfa_token": a_token, "code": apps[0].code().await}),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let caller = server
        .tokens
        .verify(done.body["access_token"].as_str().expect("token"))
        .expect("token");
    let a = server
        .flows
        .db()
        .find_user_by_email(&tenantkit_core::Email::parse("mfa-a@example.com").expect("email"))
        .await
        .expect("read")
        .expect("user");
    assert_eq!(caller.user_id(), a.id);
}

/// A tenant that requires a second factor: set by its owner from a session that gave one, and
/// an invited account without one enrolls before its first session (`403
/// mfa_enrollment_required`, then the enrollment routes, which sign in).
async fn a_tenant_policy_through_the_api(server: TestServer) {
    let Some(python) = required_service("TENANTKIT_TEST_STRIPE_PYTHON", "TOTP (pyotp)") else {
        return;
    };
    let email = "policy-owner@example.com";
    let signed_up = server.signup(email, "policy-owner").await;
    let password_only = signed_up["access_token"].as_str().expect("token");
    let enrolled = server
        .call_with_token(Some(password_only), Method::POST, "/v1/auth/mfa/totp", None)
        .await;
    let app = Authenticator::from_uri(&python, enrolled.body["otpauth_uri"].as_str().expect("uri"));
    let confirmed = server
        .call_with_token(
            Some(password_only),
            Method::POST,
            "/v1/auth/mfa/totp/confirm",
            Some(json!({"code": app.code().await})),
        )
        .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.body);

    // From the password-only session: step up first (RFC 9470), nothing changes.
    let on = json!({"mfa_required": true});
    let refused = server
        .call_with_token(
            Some(password_only),
            Method::PATCH,
            "/v1/tenant",
            Some(on.clone()),
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert_eq!(refused.body["code"], "insufficient_user_authentication");
    assert!(
        refused.headers["www-authenticate"]
            .to_str()
            .expect("ascii")
            .contains("insufficient_user_authentication")
    );
    let tenant = server
        .call_with_token(Some(password_only), Method::GET, "/v1/tenant", None)
        .await;
    assert_eq!(tenant.body["mfa_required"], false, "{}", tenant.body);

    let pending = login(&server, email).await;
    let done = verify(
        &server,
        json!({"mfa_token": pending.body["mfa_token"], "code": app.code().await}),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let owner = done.body["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    for bad in [
        json!({"mfa_required": "yes"}),
        json!({"mfa_required": true, "sso": 1}),
    ] {
        let reply = server
            .call_with_token(Some(&owner), Method::PATCH, "/v1/tenant", Some(bad.clone()))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            reply.body
        );
    }
    let changed = server
        .call_with_token(Some(&owner), Method::PATCH, "/v1/tenant", Some(on))
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(changed.body["mfa_required"], true);
    assert_eq!(changed.body["slug"], "policy-owner");
    // The owner's password-only session ended with the change.
    let ended = server
        .call(
            None,
            Method::POST,
            "/v1/auth/refresh",
            Some(json!({"refresh_token": signed_up["refresh_token"]})),
        )
        .await;
    assert_eq!(ended.status, StatusCode::UNAUTHORIZED, "{}", ended.body);

    // An invited account without a second factor: joined, then enrollment before a session.
    let invited = server
        .call_with_token(
            Some(&owner),
            Method::POST,
            "/v1/invitations",
            Some(json!({"email": "policy-member@example.com", "role": "member"})),
        )
        .await;
    assert_eq!(invited.status, StatusCode::CREATED, "{}", invited.body);
    let mailed = server
        .mailed_token("policy-member@example.com", "invited")
        .await;
    let joined = server
        .call(
            None,
            Method::POST,
            "/v1/invitations/accept",
            Some(json!({"token": mailed, "password": PASSWORD})),
        )
        .await;
    assert_eq!(joined.status, StatusCode::FORBIDDEN, "{}", joined.body);
    assert_eq!(joined.body["code"], "mfa_enrollment_required");
    assert_eq!(joined.headers["cache-control"], "no-store");
    assert!(joined.body.get("access_token").is_none());
    let mfa_token = joined.body["mfa_token"]
        .as_str()
        .expect("mfa_token")
        .to_owned();
    // The token only enrolls.
    let misused = verify(&server, json!({"mfa_token": mfa_token, "code": "123456"})).await;
    assert_eq!(misused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(misused.body["code"], "invalid_token");
    let seed = server
        .call(
            None,
            Method::POST,
            "/v1/auth/mfa/enroll",
            Some(json!({"mfa_token": mfa_token})),
        )
        .await;
    assert_eq!(seed.status, StatusCode::CREATED, "{}", seed.body);
    assert_eq!(seed.headers["cache-control"], "no-store");
    let member_app =
        Authenticator::from_uri(&python, seed.body["otpauth_uri"].as_str().expect("uri"));
    let confirm = "/v1/auth/mfa/enroll/confirm";
    let wrong = server
        .call(
            None,
            Method::POST,
            confirm,
            Some(json!({"mfa_token": mfa_token, "code": "000000"})),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.body);
    let signed_in = server
        .call(
            None,
            Method::POST,
            confirm,
            Some(json!({"mfa_token": mfa_token, "code": member_app.code().await})),
        )
        .await;
    assert_eq!(signed_in.status, StatusCode::OK, "{}", signed_in.body);
    assert_eq!(signed_in.headers["cache-control"], "no-store");
    assert_eq!(
        signed_in.body["recovery_codes"].as_array().map(Vec::len),
        Some(10)
    );
    let member = server
        .tokens
        .verify(signed_in.body["access_token"].as_str().expect("token"))
        .expect("a valid token");
    assert!(member.has_amr("otp") && member.has_amr("pwd"));
    let me = server
        .call_with_token(
            signed_in.body["access_token"].as_str(),
            Method::GET,
            "/v1/me",
            None,
        )
        .await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert_eq!(me.body["tenant"]["slug"], "policy-owner");
    let replayed = server
        .call(
            None,
            Method::POST,
            confirm,
            Some(json!({"mfa_token": mfa_token, "code": member_app.code().await})),
        )
        .await;
    assert_eq!(
        replayed.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        replayed.body
    );
}

tenantkit_core::backend_tests!(
    fixture = tenantkit_e2e::server;
    a_second_factor_through_the_api,
    pending_sign_ins_are_per_account,
    a_tenant_policy_through_the_api
);
