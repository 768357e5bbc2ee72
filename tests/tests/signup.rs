//! Signup's answers: slugs derived from any name, and the enumeration-safe mode in which a
//! registered address is answered exactly like a new one.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantkit_e2e::{PASSWORD, TestServer};
use tenantkit_server::{Config, SignupMode};

async fn signup(server: &TestServer, body: Value) -> (StatusCode, Value) {
    let reply = server
        .call(None, Method::POST, "/v1/auth/signup", Some(body))
        .await;
    (reply.status, reply.body)
}

async fn login(server: &TestServer, email: &str, password: &str) -> (StatusCode, Value) {
    let body = json!({"email": email, "password": password});
    let reply = server
        .call(None, Method::POST, "/v1/auth/login", Some(body))
        .await;
    (reply.status, reply.body)
}

async fn any_tenant_name_gets_a_valid_slug(server: TestServer) {
    // A one-letter name, a name without ASCII letters, the same name twice: each gets a
    // valid slug of its own, and no error names a field the caller never sent.
    let mut slugs = Vec::new();
    for (n, name) in ["T", "東京", "Acme", "Acme"].into_iter().enumerate() {
        let (status, body) = signup(
            &server,
            json!({"email": format!("founder{n}@example.com"), "password": PASSWORD, "tenant_name": name}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
        slugs.push(body["tenant"]["slug"].as_str().expect("slug").to_owned());
    }
    assert!(slugs[0].starts_with("t-"), "{slugs:?}");
    assert!(slugs[1].starts_with("tenant-"), "{slugs:?}");
    assert_eq!(slugs[2], "acme");
    assert!(slugs[3].starts_with("acme-"), "{slugs:?}");
    // A slug the caller chose is theirs: taken is a conflict, malformed names their field.
    let (status, body) = signup(
        &server,
        json!({"email": "late@example.com", "password": PASSWORD, "tenant_name": "Acme", "tenant_slug": "acme"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict"))
    );
    let (status, body) = signup(
        &server,
        json!({"email": "late@example.com", "password": PASSWORD, "tenant_name": "Acme", "tenant_slug": "A"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "tenant_slug");
    let (status, body) = signup(
        &server,
        json!({"email": "late@example.com", "password": PASSWORD, "tenant_name": " "}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "tenant_name");
    // Open mode says so when an address is registered (documented; see verify-first).
    let (status, _) = signup(
        &server,
        json!({"email": "founder0@example.com", "password": PASSWORD, "tenant_name": "Again"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

async fn verify_first(backend: tenantkit_core::Backend) -> Option<TestServer> {
    let config = Config {
        signup_mode: SignupMode::VerifyFirst,
        ..Config::default()
    };
    TestServer::start_with(backend, config).await
}

async fn verify_first_signup_does_not_reveal_registered_addresses(server: TestServer) {
    let registered = server.world.a.owner.email.to_string();
    let fresh = "newcomer@example.com";
    let (new_status, new_body) = signup(
        &server,
        json!({"email": fresh, "password": PASSWORD, "tenant_name": "Newcomer"}),
    )
    .await;
    let (old_status, old_body) = signup(
        &server,
        json!({"email": registered, "password": "another long passphrase", "tenant_name": "Squat"}),
    )
    .await;
    assert_eq!(
        (new_status, old_status),
        (StatusCode::ACCEPTED, StatusCode::ACCEPTED)
    );
    assert_eq!(new_body, old_body, "the same answer for both");
    assert_eq!(new_body, json!({"status": "check_your_email"}));
    // The mailboxes know what happened: a link for the new account, a notice for the old.
    let verify = server.mailed_token(fresh, "Verify").await;
    let mut notice = None;
    for _ in 0..600 {
        notice = server
            .mailer
            .sent()
            .into_iter()
            .find(|m| m.to == registered && m.subject.contains("tried to sign up"));
        if notice.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(notice.is_some(), "the registered owner is told");
    // Nothing changed for the registered account: its password still works, no new tenant.
    let owner = server.world.a.owner.id;
    assert_eq!(
        server
            .test_db
            .db
            .memberships_of(owner)
            .await
            .expect("memberships")
            .len(),
        1
    );
    // A taken slug is refused for both, before the address is looked at.
    let taken = server.world.b.tenant.slug.to_string();
    for email in [registered.as_str(), "third@example.com"] {
        let (status, _) = signup(
            &server,
            json!({"email": email, "password": PASSWORD, "tenant_name": "X", "tenant_slug": taken}),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{email}");
    }

    // Sign-in waits for the proven address: a wrong password is the usual 401; the right one
    // is `email_unverified` (and a new link).
    let (status, body) = login(&server, fresh, "not the password at all").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_credentials"))
    );
    let (status, body) = login(&server, fresh, PASSWORD).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("email_unverified")),
        "{body}"
    );
    // That login mailed a new link, which replaces the first.
    let mut links = 0;
    for _ in 0..600 {
        links = server
            .mailer
            .sent()
            .iter()
            .filter(|m| m.to == fresh && m.subject.contains("Verify"))
            .count();
        if links == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(links, 2);
    let stale = server
        .call(
            None,
            Method::POST,
            "/v1/auth/verify-email/confirm",
            Some(json!({"token": verify})),
        )
        .await;
    assert_eq!(stale.status, StatusCode::UNPROCESSABLE_ENTITY);
    let verify = server.mailed_token(fresh, "Verify").await;
    let confirmed = server
        .call(
            None,
            Method::POST,
            "/v1/auth/verify-email/confirm",
            Some(json!({"token": verify})),
        )
        .await;
    assert_eq!(
        confirmed.status,
        StatusCode::NO_CONTENT,
        "{}",
        confirmed.body
    );
    let (status, body) = login(&server, fresh, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["memberships"][0]["role"], "owner");
}

tenantkit_core::backend_tests!(
    fixture = tenantkit_e2e::server;
    any_tenant_name_gets_a_valid_slug;
    fixture = verify_first;
    verify_first_signup_does_not_reveal_registered_addresses;
);
