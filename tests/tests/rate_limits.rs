//! Rate limits over HTTP: one bucket per kind of attempt (refresh never starves behind
//! logins), client networks behind trusted proxies, and no targeted lockout.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantkit_core::Backend;
use tenantkit_e2e::{PASSWORD, TestServer};
use tenantkit_server::Config;

fn nonzero(n: u32) -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(n).expect("nonzero")
}

async fn login(server: &TestServer, from: Option<&str>, email: &str, password: &str) -> StatusCode {
    let mut request = server
        .anonymous(Method::POST, "/v1/auth/login")
        .json(&json!({"email": email, "password": password}));
    if let Some(from) = from {
        request = request.header("x-forwarded-for", from);
    }
    request.send().await.expect("send").status()
}

/// Small per-network budgets: 7 attempts of a kind a minute. A minute of refresh grace: the
/// concurrent refreshes below are twins however slowly a busy machine starts them.
async fn small_per_network(backend: Backend) -> Option<TestServer> {
    let config = Config {
        rate_per_ip: nonzero(7),
        refresh_grace_secs: 60,
        ..Config::default()
    };
    TestServer::start_with(backend, config).await
}

async fn concurrent_refreshes_after_logins_all_get_the_same_successor(server: TestServer) {
    server.signup("tabs@example.com", "many-tabs").await;
    let mut refresh_token = String::new();
    for _ in 0..6 {
        let reply = server
            .call(
                None,
                Method::POST,
                "/v1/auth/login",
                Some(json!({"email": "tabs@example.com", "password": PASSWORD})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        refresh_token = reply.body["refresh_token"]
            .as_str()
            .expect("token")
            .to_owned();
    }
    // Logins spent most of the address's login budget; refreshes have their own.
    let refreshes = (0..4).map(|_| {
        server.call(
            None,
            Method::POST,
            "/v1/auth/refresh",
            Some(json!({"refresh_token": refresh_token})),
        )
    });
    let replies = futures_util::future::join_all(refreshes).await;
    let successors: Vec<&Value> = replies.iter().map(|r| &r.body["refresh_token"]).collect();
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    assert!(
        successors.iter().all(|s| *s == successors[0]),
        "one successor for concurrent refreshes: {successors:?}"
    );
}

/// Trusts the loopback proxy the test client connects from; 4 login attempts a minute per
/// client network, 2 failures per account and network.
async fn behind_a_proxy(backend: Backend) -> Option<TestServer> {
    let config = Config {
        rate_per_ip: nonzero(4),
        rate_per_account: nonzero(2),
        trusted_proxies: "127.0.0.1/32, ::1".parse().expect("networks"),
        ..Config::default()
    };
    TestServer::start_with(backend, config).await
}

async fn clients_behind_a_trusted_proxy_get_separate_buckets(server: TestServer) {
    let (a, b) = (Some("203.0.113.1"), Some("203.0.113.2"));
    for i in 0..4 {
        let email = format!("nobody{i}@example.com");
        assert_eq!(
            login(&server, a, &email, "wrong wrong wrong").await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login(&server, a, "someone@example.com", "wrong wrong wrong").await,
        StatusCode::TOO_MANY_REQUESTS,
        "client A spent its budget"
    );
    assert_eq!(
        login(&server, b, "someone@example.com", "wrong wrong wrong").await,
        StatusCode::UNAUTHORIZED,
        "client B, behind the same proxy, has its own"
    );
    // A forged chain: only the hop the trusted proxy appended counts.
    assert_eq!(
        login(
            &server,
            Some("198.51.100.99, 203.0.113.1"),
            "x@example.com",
            "wrong wrong"
        )
        .await,
        StatusCode::TOO_MANY_REQUESTS,
        "a forged left-most hop does not make a new client"
    );
    // IPv6 clients count by their /64.
    for i in 0..4 {
        let (from, email) = (
            format!("2001:db8:7:7::{i:x}"),
            format!("v6-{i}@example.com"),
        );
        assert_eq!(
            login(&server, Some(&from), &email, "wrong wrong wrong").await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login(
            &server,
            Some("2001:db8:7:7::ffff"),
            "v6@example.com",
            "wrong wrong"
        )
        .await,
        StatusCode::TOO_MANY_REQUESTS,
        "rotating inside a /64 gives no new budget"
    );
}

/// No trusted proxy (the default): forwarding headers are the client's own words.
async fn untrusted(backend: Backend) -> Option<TestServer> {
    let config = Config {
        rate_per_ip: nonzero(4),
        ..Config::default()
    };
    TestServer::start_with(backend, config).await
}

async fn an_untrusted_peers_forwarding_headers_are_ignored(server: TestServer) {
    for i in 0..4 {
        let (forged, email) = (format!("203.0.113.{i}"), format!("nobody{i}@example.com"));
        assert_eq!(
            login(&server, Some(&forged), &email, "wrong wrong wrong").await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login(
            &server,
            Some("203.0.113.200"),
            "nobody@example.com",
            "wrong wrong"
        )
        .await,
        StatusCode::TOO_MANY_REQUESTS,
        "every forged address is the same peer"
    );
}

async fn an_attacker_elsewhere_cannot_lock_the_owner_out(server: TestServer) {
    server.signup("owner@victim.example", "victim-co").await;
    let attacker = Some("203.0.113.66");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            login(
                &server,
                attacker,
                "owner@victim.example",
                "guess guess guess",
            )
            .await,
        );
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert_eq!(
        login(
            &server,
            Some("198.51.100.5"),
            "owner@victim.example",
            PASSWORD
        )
        .await,
        StatusCode::OK,
        "the owner, from their own network, still gets in with the right password"
    );
    // Failed logins are audited with the client address the proxy named.
    let owner = server
        .call(
            None,
            Method::POST,
            "/v1/auth/login",
            Some(json!({"email": "owner@victim.example", "password": PASSWORD})),
        )
        .await;
    let token = owner.body["access_token"].as_str().expect("token");
    // Failed logins are audited off the request's path: wait for them (bounded).
    let mut log = Value::Null;
    for _ in 0..600 {
        log = server
            .call_with_token(
                Some(token),
                Method::GET,
                "/v1/audit-log?action=auth.login_failed",
                None,
            )
            .await
            .body;
        if log["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty())
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let ips: Vec<&str> = log["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["ip"].as_str())
        .collect();
    assert!(
        !ips.is_empty() && ips.iter().all(|ip| *ip == "203.0.113.66"),
        "{ips:?}"
    );
}

/// Two failed logins per account and network.
async fn two_failures(backend: Backend) -> Option<TestServer> {
    let config = Config {
        rate_per_account: nonzero(2),
        ..Config::default()
    };
    TestServer::start_with(backend, config).await
}

async fn reset_requests_do_not_drain_the_login_budget(server: TestServer) {
    server.signup("forgetful@example.com", "forgetful").await;
    for _ in 0..2 {
        let reply = server
            .call(
                None,
                Method::POST,
                "/v1/auth/password-reset/request",
                Some(json!({"email": "forgetful@example.com"})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
    }
    assert_eq!(
        login(
            &server,
            Some("198.51.100.8"),
            "forgetful@example.com",
            "wrong wrong wrong"
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "a failed login after resets is a failure, not a lockout"
    );
    assert_eq!(
        login(
            &server,
            Some("198.51.100.8"),
            "forgetful@example.com",
            PASSWORD
        )
        .await,
        StatusCode::OK
    );
}

tenantkit_core::backend_tests!(
    fixture = small_per_network;
    concurrent_refreshes_after_logins_all_get_the_same_successor;
    fixture = two_failures;
    reset_requests_do_not_drain_the_login_budget;
    fixture = behind_a_proxy;
    clients_behind_a_trusted_proxy_get_separate_buckets,
    an_attacker_elsewhere_cannot_lock_the_owner_out;
    fixture = untrusted;
    an_untrusted_peers_forwarding_headers_are_ignored;
);
