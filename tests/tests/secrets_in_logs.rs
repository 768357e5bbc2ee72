//! No password, access token, refresh token, hash, second-factor seed, recovery code or
//! pending sign-in token, single sign-on client secret or exchange code ever reaches the logs,
//! at any level.
//! (Its own test binary: it installs a global subscriber that records everything.)

use std::io::Write;
use std::sync::{Arc, Mutex};

use reqwest::Method;
use serde_json::{Value, json};
use tenantkit_core::Backend;
use tenantkit_e2e::TestServer;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_refresh_never_log_secrets() {
    let capture = Capture::default();
    tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .init();

    let Some(issuer) = tenantkit_core::testing::required_service(
        "TENANTKIT_TEST_OIDC_ISSUER",
        "single sign-on (oidc-provider)",
    ) else {
        return;
    };
    let Some(server) = TestServer::start_at(Backend::Sqlite, |base| tenantkit_server::Config {
        public_url: Some(base.to_owned()),
        sso_allow_hosts: vec!["127.0.0.1".into()],
        ..tenantkit_server::Config::default()
    })
    .await
    else {
        return;
    };
    let password = "Sup3r-Secret-Passphrase-xyz";
    let server = &server;
    let post = move |path: &'static str, body: Value| async move {
        server.call(None, Method::POST, path, Some(body)).await.body
    };

    let signup = post(
        "/v1/auth/signup",
        json!({"email": "quiet@example.com", "password": password, "tenant_name": "Quiet"}),
    )
    .await;
    let login = post(
        "/v1/auth/login",
        json!({"email": "quiet@example.com", "password": password}),
    )
    .await;
    let refreshed = post(
        "/v1/auth/refresh",
        json!({"refresh_token": login["refresh_token"]}),
    )
    .await;
    post(
        "/v1/auth/login",
        json!({"email": "quiet@example.com", "password": "Wrong-Secret-Passphrase-abc"}),
    )
    .await;
    post(
        "/v1/auth/logout",
        json!({"refresh_token": refreshed["refresh_token"]}),
    )
    .await;
    server
        .anonymous(Method::GET, "/v1/me")
        .bearer_auth(refreshed["access_token"].as_str().expect("token"))
        .send()
        .await
        .expect("send");

    // A second factor: its seed, its recovery codes and a pending sign-in's token.
    let access = signup["access_token"].as_str().expect("a").to_owned();
    let enrolled = server
        .call_with_token(Some(&access), Method::POST, "/v1/auth/mfa/totp", None)
        .await
        .body;
    let seed = enrolled["secret"].as_str().expect("seed").to_owned();
    let totp = totp_rs::TOTP::new(
        totp_rs::Algorithm::SHA1,
        6,
        1,
        30,
        totp_rs::Secret::Encoded(seed.clone())
            .to_bytes()
            .expect("base32"),
    )
    .expect("totp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let confirmed = server
        .call_with_token(
            Some(&access),
            Method::POST,
            "/v1/auth/mfa/totp/confirm",
            Some(json!({"code": totp.generate(now)})),
        )
        .await
        .body;
    let recovery: Vec<String> =
        serde_json::from_value(confirmed["recovery_codes"].clone()).expect("recovery codes");
    let pending = post(
        "/v1/auth/login",
        json!({"email": "quiet@example.com", "password": password}),
    )
    .await;
    let mfa_token = pending["mfa_token"].as_str().expect("mfa_token").to_owned();
    post(
        "/v1/auth/mfa/verify",
        json!({"mfa_token": mfa_token, "recovery_code": "wrong-wrong-wrong-wrong"}),
    )
    .await;
    let second = post(
        "/v1/auth/mfa/verify",
        json!({"mfa_token": mfa_token, "recovery_code": recovery[0]}),
    )
    .await;
    assert!(second["access_token"].is_string(), "{second}");

    // A single sign-on client secret (sealed, then unsealed to start a login) and an exchange
    // code.
    let client_secret = "Client-Secret-Never-Logged-789";
    let client_id = format!("quiet-{}", tenantkit_core::SessionId::new());
    let registered = reqwest::Client::new()
        .post(format!("{issuer}/test/clients"))
        .json(&json!({
            "client_id": client_id, "client_secret": client_secret,
            "redirect_uris": [format!("{}/v1/sso/callback", server.base_url)],
        }))
        .send()
        .await
        .expect("register");
    assert!(registered.status().is_success());
    let created = server
        .call_with_token(
            Some(&access),
            Method::POST,
            "/v1/sso/connections",
            Some(json!({"issuer": issuer, "client_id": client_id, "client_secret": client_secret})),
        )
        .await;
    assert_eq!(
        created.status,
        reqwest::StatusCode::CREATED,
        "{}",
        created.body
    );
    let slug = signup["tenant"]["slug"].as_str().expect("slug").to_owned();
    let started = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(format!("{}/v1/sso/{slug}/login", server.base_url))
        .send()
        .await
        .expect("login");
    assert_eq!(started.status(), reqwest::StatusCode::FOUND);
    let sso_code = "sso_Exchange-Code-Never-Logged-456";
    post("/v1/auth/sso/exchange", json!({"code": sso_code})).await;

    let user = server
        .test_db
        .db
        .find_user_by_email(&tenantkit_core::Email::parse("quiet@example.com").expect("email"))
        .await
        .expect("find")
        .expect("user");
    let hash = user.password_hash.expect("hash").as_str().to_owned();
    let logs = String::from_utf8(capture.0.lock().expect("capture").clone()).expect("utf8");
    assert!(logs.contains("login"), "the capture works: {logs}");
    let secrets = [
        password.to_owned(),
        "Wrong-Secret-Passphrase-abc".to_owned(),
        hash,
        signup["access_token"].as_str().expect("a").to_owned(),
        signup["refresh_token"].as_str().expect("r").to_owned(),
        login["refresh_token"].as_str().expect("r").to_owned(),
        refreshed["access_token"].as_str().expect("a").to_owned(),
        refreshed["refresh_token"].as_str().expect("r").to_owned(),
        seed,
        enrolled["otpauth_uri"].as_str().expect("uri").to_owned(),
        recovery[0].clone(),
        recovery[1].clone(),
        mfa_token,
        second["access_token"].as_str().expect("a").to_owned(),
        second["refresh_token"].as_str().expect("r").to_owned(),
        client_secret.to_owned(),
        sso_code.to_owned(),
    ];
    for secret in &secrets {
        // Check a distinctive slice too, in case a secret was logged truncated.
        let slice = if secret.len() >= 48 {
            &secret[secret.len() / 3..secret.len() / 3 + 16]
        } else {
            secret.as_str()
        };
        assert!(
            !logs.contains(secret.as_str()) && !logs.contains(slice),
            "a secret leaked into the logs"
        );
    }
}
