//! The whole account flow over HTTP: sign up, call a protected route, log in, refresh, get
//! caught replaying, log out — and the bad inputs and attacks along the way.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantkit_core::{Backend, Email};
use tenantkit_e2e::{PASSWORD, TestServer, id, problem};
use tenantkit_server::Config;

async fn post(
    server: &TestServer,
    path: &str,
    body: Value,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let reply = server.call(None, Method::POST, path, Some(body)).await;
    (reply.status, reply.headers, reply.body)
}

async fn get_as(server: &TestServer, token: &str, path: &str) -> (StatusCode, Value) {
    let response = server
        .anonymous(Method::GET, path)
        .bearer_auth(token)
        .send()
        .await
        .expect("send");
    let status = response.status();
    (status, response.json().await.expect("json"))
}

async fn signup_login_refresh_replay_logout(server: TestServer) {
    let signed_up = server.signup("Founder@Example.com", "acme-rockets").await;
    assert_eq!(signed_up["token_type"], "Bearer");
    assert_eq!(signed_up["expires_in"], 900);
    assert_eq!(signed_up["user"]["email"], "founder@example.com");
    assert_eq!(signed_up["tenant"]["slug"], "acme-rockets");
    assert!(
        signed_up["user"].get("password_hash").is_none(),
        "hashes never leave the server"
    );
    let access = signed_up["access_token"].as_str().expect("access");

    let (status, me) = get_as(&server, access, "/v1/me").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (me["role"].as_str(), me["tenant"]["id"].clone()),
        (Some("owner"), signed_up["tenant"]["id"].clone())
    );
    let created = server
        .anonymous(Method::POST, "/v1/projects")
        .bearer_auth(access)
        .json(&json!({"name": "Launch"}))
        .send()
        .await
        .expect("send");
    assert_eq!(created.status(), StatusCode::CREATED);

    // Log in again (case-insensitive email; tenant by slug).
    let (status, headers, login) = post(
        &server,
        "/v1/auth/login",
        json!({"email": "FOUNDER@example.com", "password": PASSWORD, "tenant": "acme-rockets"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{login}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(login["memberships"][0]["role"], "owner");
    let r0 = login["refresh_token"].as_str().expect("refresh").to_owned();

    // Rotate, then replay the spent token: the family dies (grace is 0 in this test).
    let (status, _, rotated) =
        post(&server, "/v1/auth/refresh", json!({"refresh_token": r0})).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let r1 = rotated["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    assert_ne!(r1, r0);
    let (status, me) = get_as(
        &server,
        rotated["access_token"].as_str().expect("access"),
        "/v1/me",
    )
    .await;
    assert_eq!(
        (status, me["role"].as_str()),
        (StatusCode::OK, Some("owner"))
    );

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let replay = server
        .anonymous(Method::POST, "/v1/auth/refresh")
        .json(&json!({"refresh_token": r0}))
        .send()
        .await
        .expect("send");
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(problem(replay).await["code"], "refresh_token_reused");
    let (status, _, body) = post(&server, "/v1/auth/refresh", json!({"refresh_token": r1})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token")),
        "the successor died with its family"
    );

    // The signup session is separate and still works; logout ends it.
    let r_signup = signed_up["refresh_token"].as_str().expect("refresh");
    let (status, _, _) = post(
        &server,
        "/v1/auth/logout",
        json!({"refresh_token": r_signup}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = post(
        &server,
        "/v1/auth/refresh",
        json!({"refresh_token": r_signup}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = post(
        &server,
        "/v1/auth/logout",
        json!({"refresh_token": "never-issued"}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "logout reveals nothing about tokens"
    );
}

async fn wrong_password_and_unknown_email_answer_identically(server: TestServer) {
    server.signup("ada@example.com", "analytical").await;
    let wrong = post(
        &server,
        "/v1/auth/login",
        json!({"email": "ada@example.com", "password": "not the password at all"}),
    )
    .await;
    let unknown = post(
        &server,
        "/v1/auth/login",
        json!({"email": "nobody@example.com", "password": PASSWORD}),
    )
    .await;
    let wrong_tenant = post(
        &server,
        "/v1/auth/login",
        json!({"email": "ada@example.com", "password": PASSWORD, "tenant": "someone-else"}),
    )
    .await;
    assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.2["code"], "invalid_credentials");
    assert_eq!(wrong.2, unknown.2, "no account enumeration by message");
    assert_eq!(wrong.2, wrong_tenant.2);
}

async fn signup_rejects_bad_input_and_duplicates(server: TestServer) {
    let (status, _, body) = post(&server, "/v1/auth/signup",
        json!({"email": "not-an-email", "password": "password1234", "tenant_name": " ", "tenant_slug": "Bad Slug"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut fields: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field"))
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["email", "password", "tenant_name", "tenant_slug"]);
    let (status, _, body) = post(
        &server,
        "/v1/auth/signup",
        json!({"email": "x@example.com", "password": "x".repeat(2000), "tenant_name": "X"}),
    )
    .await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("password"))
    );

    server.signup("taken@example.com", "taken-slug").await;
    let (status, _, body) = post(
        &server,
        "/v1/auth/signup",
        json!({"email": "TAKEN@example.com", "password": PASSWORD, "tenant_name": "Other"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict"))
    );
    let (status, _, _) = post(&server, "/v1/auth/signup",
        json!({"email": "fresh@example.com", "password": PASSWORD, "tenant_name": "Other", "tenant_slug": "taken-slug"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // The failed signup left no user behind: that email can still sign up.
    server.signup("fresh@example.com", "fresh-slug").await;
    let (status, _, _) = post(
        &server,
        "/v1/auth/signup",
        json!({"email": "a@b.co", "password": PASSWORD}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "missing tenant_name"
    );
}

async fn login_upgrades_an_outdated_password_hash(server: TestServer) {
    server.signup("legacy@example.com", "legacy").await;
    let email = Email::parse("legacy@example.com").expect("email");
    let user = server
        .test_db
        .db
        .find_user_by_email(&email)
        .await
        .expect("find")
        .expect("user");
    let weak = tenantkit_auth::PasswordHasher::with_params(8 * 1024, 1, 1).expect("params");
    let legacy = weak
        .hash(&tenantkit_auth::Password::new(PASSWORD))
        .await
        .expect("hash");
    server
        .test_db
        .db
        .set_password_hash(user.id, &legacy)
        .await
        .expect("store legacy hash");

    let (status, _, _) = post(
        &server,
        "/v1/auth/login",
        json!({"email": "legacy@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let after = server
        .test_db
        .db
        .find_user_by_email(&email)
        .await
        .expect("find")
        .expect("user");
    let stored = after.password_hash.expect("hash");
    assert!(
        stored
            .as_str()
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "rehashed on login"
    );
}

async fn logout_all_ends_every_session(server: TestServer) {
    let first = server.signup("many@example.com", "many-sessions").await;
    let (_, _, second) = post(
        &server,
        "/v1/auth/login",
        json!({"email": "many@example.com", "password": PASSWORD}),
    )
    .await;
    let response = server
        .anonymous(Method::POST, "/v1/auth/logout-all")
        .bearer_auth(second["access_token"].as_str().expect("access"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    for session in [&first, &second] {
        let (status, _, _) = post(
            &server,
            "/v1/auth/refresh",
            json!({"refresh_token": session["refresh_token"]}),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let anonymous = server
        .anonymous(Method::POST, "/v1/auth/logout-all")
        .send()
        .await
        .expect("send");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

async fn malformed_auth_bodies_are_problems(server: TestServer) {
    for (path, body) in [
        ("/v1/auth/login", "{"),
        ("/v1/auth/refresh", "[]"),
        ("/v1/auth/logout", "{\"refresh_token\": 5}"),
        (
            "/v1/auth/signup",
            "{\"email\": \"a@b.co\", \"password\": \"xxxxxxxxxxxxxxx\", \"tenant_name\": \"a\", \"role\": \"owner\"}",
        ),
    ] {
        let response = server
            .anonymous(Method::POST, path)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("send");
        assert!(response.status().is_client_error(), "{path} {body}");
        problem(response).await;
    }
}

/// A server whose refresh grace window is zero, so every replay counts as reuse.
async fn no_grace(backend: Backend) -> Option<TestServer> {
    let config = Config {
        refresh_grace_secs: 0,
        ..Config::default()
    };
    TestServer::start_with(backend, config).await
}

/// A server with small rate limits: 3 attempts per account, 7 per client address.
async fn small_limits(backend: Backend) -> Option<TestServer> {
    let config = Config {
        rate_per_account: std::num::NonZeroU32::new(3).expect("nonzero"),
        rate_per_ip: std::num::NonZeroU32::new(7).expect("nonzero"),
        ..Config::default()
    };
    TestServer::start_with(backend, config).await
}

async fn rate_limits_answer_429_with_retry_after(server: TestServer) {
    let attempt = |email: &'static str| {
        server
            .anonymous(Method::POST, "/v1/auth/login")
            .json(&json!({"email": email, "password": "guess-guess-guess"}))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(
            attempt("victim@example.com").await.expect("send").status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let limited = attempt("VICTIM@example.com").await.expect("send");
    assert_eq!(
        limited.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "per-account limit, case-insensitive"
    );
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry));
    assert_eq!(problem(limited).await["code"], "rate_limited");
    // Another account is not locked by the victim's limit, until the IP limit (7) is spent.
    for _ in 0..3 {
        assert_eq!(
            attempt("other@example.com").await.expect("send").status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        attempt("third@example.com").await.expect("send").status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the address's login budget (7) is spent"
    );
    // Each kind of attempt has its own bucket: refreshing still works.
    let refresh = server
        .anonymous(Method::POST, "/v1/auth/refresh")
        .json(&json!({"refresh_token": "x"}))
        .send()
        .await
        .expect("send");
    assert_eq!(
        refresh.status(),
        StatusCode::UNAUTHORIZED,
        "logins do not spend the refresh budget"
    );
}

async fn switch_tenant_and_change_password(server: TestServer) {
    let home = server.signup("multi@example.com", "home-base").await;
    let other = server.signup("boss@example.com", "other-base").await;
    // The boss adds our user to the other tenant as a viewer.
    let other_tenant: tenantkit_core::TenantId = id(&other["tenant"]["id"]);
    let user: tenantkit_core::UserId = id(&home["user"]["id"]);
    let mut tx = server
        .test_db
        .db
        .begin(&tenantkit_core::TenantScope::for_system(other_tenant))
        .await
        .expect("begin");
    tx.add_member(user, tenantkit_core::Role::Viewer)
        .await
        .expect("add");
    tx.commit().await.expect("commit");

    let access = home["access_token"].as_str().expect("access");
    let switch = |tenant: Value| {
        server
            .anonymous(Method::POST, "/v1/auth/switch-tenant")
            .bearer_auth(access)
            .json(&json!({"tenant_id": tenant}))
            .send()
    };
    let switched: Value = switch(other["tenant"]["id"].clone())
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let (status, me) = get_as(
        &server,
        switched["access_token"].as_str().expect("access"),
        "/v1/me",
    )
    .await;
    assert_eq!(
        (status, me["role"].as_str(), me["tenant"]["id"].clone()),
        (
            StatusCode::OK,
            Some("viewer"),
            other["tenant"]["id"].clone()
        )
    );
    // Not a member / not a tenant / garbage: the same 404.
    let stranger = server.signup("stranger@example.com", "stranger-base").await;
    let a = switch(stranger["tenant"]["id"].clone())
        .await
        .expect("send");
    let b = switch(json!(tenantkit_core::TenantId::new().to_string()))
        .await
        .expect("send");
    let c = switch(json!("not-an-id")).await.expect("send");
    assert_eq!(
        (a.status(), b.status(), c.status()),
        (
            StatusCode::NOT_FOUND,
            StatusCode::NOT_FOUND,
            StatusCode::NOT_FOUND
        )
    );
    assert_eq!(problem(a).await, problem(b).await);

    // Password change: wrong current password is a field error; weak new one too.
    let change = |current: &str, new: &str| {
        server
            .anonymous(Method::POST, "/v1/auth/password")
            .bearer_auth(access)
            .json(&json!({"current_password": current, "new_password": new}))
            .send()
    };
    let wrong = change("not my password!", "another fine passphrase")
        .await
        .expect("send");
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        problem(wrong).await["errors"][0]["field"],
        "current_password"
    );
    let weak = change(PASSWORD, "password1234").await.expect("send");
    assert_eq!(problem(weak).await["errors"][0]["field"], "new_password");
    let ok = change(PASSWORD, "another fine passphrase")
        .await
        .expect("send");
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    // Other sessions are dead; the one that changed the password lives; the new password works.
    let (status, _, _) = post(
        &server,
        "/v1/auth/refresh",
        json!({"refresh_token": switched["refresh_token"]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "other sessions revoked");
    let (status, _, _) = post(
        &server,
        "/v1/auth/refresh",
        json!({"refresh_token": home["refresh_token"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "the calling session stays");
    let (status, _, _) = post(
        &server,
        "/v1/auth/login",
        json!({"email": "multi@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = post(
        &server,
        "/v1/auth/login",
        json!({"email": "multi@example.com", "password": "another fine passphrase"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

async fn auth_events_are_audited_without_secrets(server: TestServer) {
    let call = |path: &'static str, body: Value| {
        server
            .anonymous(Method::POST, path)
            .header("user-agent", "audit-e2e/1.0")
            .json(&body)
            .send()
    };
    let signed_up: Value = call(
        "/v1/auth/signup",
        json!({"email": "audited@example.com", "password": PASSWORD, "tenant_name": "Audited"}),
    )
    .await
    .expect("send")
    .json()
    .await
    .expect("json");
    call(
        "/v1/auth/login",
        json!({"email": "audited@example.com", "password": "definitely wrong guess"}),
    )
    .await
    .expect("send");
    // A failed login is audited off the request's path (its answer waits for nothing that
    // could tell an attacker more): wait for the entry, so the order below is the order of
    // the events, not of the scheduler.
    let tenant: tenantkit_core::TenantId = id(&signed_up["tenant"]["id"]);
    let scope = tenantkit_core::TenantScope::for_system(tenant);
    let mut recorded = false;
    for _ in 0..600 {
        let mut tx = server.test_db.db.begin_read(&scope).await.expect("begin");
        let entries = tx.audit_entries(0, 100).await.expect("entries");
        if entries.iter().any(|e| e.action == "auth.login_failed") {
            recorded = true;
            break;
        }
        drop(tx);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(recorded, "the failed login was never audited");
    let login: Value = call(
        "/v1/auth/login",
        json!({"email": "audited@example.com", "password": PASSWORD}),
    )
    .await
    .expect("send")
    .json()
    .await
    .expect("json");
    let rotated: Value = call(
        "/v1/auth/refresh",
        json!({"refresh_token": login["refresh_token"]}),
    )
    .await
    .expect("send")
    .json()
    .await
    .expect("json");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    call(
        "/v1/auth/refresh",
        json!({"refresh_token": login["refresh_token"]}),
    )
    .await
    .expect("send");
    call(
        "/v1/auth/logout",
        json!({"refresh_token": signed_up["refresh_token"]}),
    )
    .await
    .expect("send");

    let mut tx = server.test_db.db.begin_read(&scope).await.expect("begin");
    let entries = tx.audit_entries(0, 100).await.expect("entries");
    assert_eq!(
        tx.verify_audit_chain(None, None).await.expect("verify"),
        None
    );
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "auth.signup",
            "auth.login_failed",
            "auth.login",
            "auth.refresh_reused",
            "auth.logout"
        ]
    );
    for entry in &entries {
        assert_eq!(entry.ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(entry.user_agent.as_deref(), Some("audit-e2e/1.0"));
    }
    let all = serde_json::to_string(&entries).expect("json");
    for secret in [
        PASSWORD,
        "definitely wrong guess",
        signed_up["access_token"].as_str().expect("a"),
        login["refresh_token"].as_str().expect("r"),
        rotated["refresh_token"].as_str().expect("r"),
    ] {
        assert!(!all.contains(secret), "a secret reached the audit log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_failed_logins_count_against_an_account() {
    let config = Config {
        rate_per_account: std::num::NonZeroU32::new(2).expect("nonzero"),
        rate_per_ip: std::num::NonZeroU32::new(1000).expect("nonzero"),
        ..Config::default()
    };
    let Some(server) = TestServer::start_with(Backend::Sqlite, config).await else {
        return;
    };
    server.signup("busy@example.com", "busy-owner").await;
    let login = |password: &'static str| {
        server
            .anonymous(Method::POST, "/v1/auth/login")
            .json(&json!({"email": "busy@example.com", "password": password}))
            .send()
    };
    for _ in 0..6 {
        assert_eq!(
            login(PASSWORD).await.expect("send").status(),
            StatusCode::OK,
            "logging in often never locks the owner out"
        );
    }
    assert_eq!(
        login("wrong wrong wrong").await.expect("send").status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login("wrong wrong wrong").await.expect("send").status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login("wrong wrong wrong").await.expect("send").status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the budget of failures is spent"
    );
    let blocked = login(PASSWORD).await.expect("send");
    assert_eq!(
        blocked.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "blocked even with the right password, until the wait ends"
    );
    assert!(blocked.headers().contains_key("retry-after"));
}

tenantkit_core::backend_tests!(
    fixture = no_grace;
    signup_login_refresh_replay_logout,
    wrong_password_and_unknown_email_answer_identically,
    signup_rejects_bad_input_and_duplicates,
    login_upgrades_an_outdated_password_hash,
    logout_all_ends_every_session,
    malformed_auth_bodies_are_problems;
    fixture = small_limits; rate_limits_answer_429_with_retry_after;
    fixture = tenantkit_e2e::server; switch_tenant_and_change_password;
    fixture = no_grace; auth_events_are_audited_without_secrets;
);
