//! Rate limits over HTTP: one bucket per kind of attempt (refresh never starves behind
//! logins), client networks behind trusted proxies (only the configured forwarding header is
//! read), and no targeted lockout, not even by a distributed run past the account-wide
//! ceiling.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantkit_core::Backend;
use tenantkit_e2e::{PASSWORD, TestServer};
use tenantkit_server::{Config, ForwardedHeader};

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

/// A login from behind the loopback proxy with these forwarding headers.
async fn login_with(
    server: &TestServer,
    headers: &[(&str, &str)],
    email: &str,
    password: &str,
) -> StatusCode {
    let mut request = server
        .anonymous(Method::POST, "/v1/auth/login")
        .json(&json!({"email": email, "password": password}));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("send").status()
}

/// The client addresses of the account's failed logins, once there are `count` of them
/// (they are audited off the request's path: bounded wait).
async fn failed_login_ips(server: &TestServer, email: &str, count: usize) -> Vec<String> {
    let owner = server
        .call(
            None,
            Method::POST,
            "/v1/auth/login",
            Some(json!({"email": email, "password": PASSWORD})),
        )
        .await;
    assert_eq!(owner.status, StatusCode::OK, "{}", owner.body);
    let token = owner.body["access_token"].as_str().expect("token");
    let mut ips = Vec::new();
    for _ in 0..600 {
        let log = server
            .call_with_token(
                Some(token),
                Method::GET,
                "/v1/audit-log?action=auth.login_failed",
                None,
            )
            .await
            .body;
        ips = log["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|e| e["ip"].as_str().map(str::to_owned))
            .collect();
        if ips.len() >= count {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    ips
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

/// Trusts loopback (the test client's proxy), reading `header`; 4 login attempts a minute per
/// client network.
async fn loopback_proxy(backend: Backend, header: ForwardedHeader) -> Option<TestServer> {
    let config = Config {
        rate_per_ip: nonzero(4),
        trusted_proxies: "127.0.0.0/8, ::1".parse().expect("networks"),
        forwarded_header: header,
        ..Config::default()
    };
    TestServer::start_with(backend, config).await
}

async fn x_forwarded_for_proxy(backend: Backend) -> Option<TestServer> {
    loopback_proxy(backend, ForwardedHeader::XForwardedFor).await
}

async fn forwarded_proxy(backend: Backend) -> Option<TestServer> {
    loopback_proxy(backend, ForwardedHeader::Forwarded).await
}

/// nginx, ALB and Caddy append to `X-Forwarded-For` and pass a client's own `Forwarded`
/// through: a forged `Forwarded` must name nobody, neither for the limits nor in the audit log.
async fn a_forged_forwarded_header_gets_no_new_budget(server: TestServer) {
    server.signup("forged@example.com", "forged-co").await;
    let proxy_says = "203.0.113.50";
    for i in 0..4 {
        let forged = format!("for=198.51.100.{i}");
        assert_eq!(
            login_with(
                &server,
                &[("forwarded", &forged), ("x-forwarded-for", proxy_says)],
                "forged@example.com",
                "wrong wrong wrong"
            )
            .await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login_with(
            &server,
            &[
                ("forwarded", "for=198.51.100.200"),
                ("x-forwarded-for", proxy_says)
            ],
            "forged@example.com",
            "wrong wrong wrong"
        )
        .await,
        StatusCode::TOO_MANY_REQUESTS,
        "every attempt counted against the address the proxy named"
    );
    assert_eq!(
        login_with(
            &server,
            &[
                ("forwarded", "for=198.51.100.1"),
                ("x-forwarded-for", "203.0.113.51")
            ],
            "forged@example.com",
            "wrong wrong wrong"
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "another client of the proxy has its own budget"
    );
    let ips = failed_login_ips(&server, "forged@example.com", 5).await;
    assert_eq!(ips.len(), 5, "{ips:?}");
    assert!(
        ips.iter()
            .all(|ip| ip == proxy_says || ip == "203.0.113.51"),
        "audited with the proxy's addresses, never the forged ones: {ips:?}"
    );
}

/// The reverse: behind a proxy that appends to `Forwarded`, a client's `X-Forwarded-For` is
/// its own words.
async fn in_forwarded_mode_a_forged_x_forwarded_for_gets_no_new_budget(server: TestServer) {
    server.signup("forged@example.com", "forged-co").await;
    let proxy_says = "for=\"203.0.113.60:4711\"";
    for i in 0..4 {
        let forged = format!("198.51.100.{i}");
        assert_eq!(
            login_with(
                &server,
                &[("forwarded", proxy_says), ("x-forwarded-for", &forged)],
                "forged@example.com",
                "wrong wrong wrong"
            )
            .await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login_with(
            &server,
            &[
                ("forwarded", proxy_says),
                ("x-forwarded-for", "198.51.100.200")
            ],
            "forged@example.com",
            "wrong wrong wrong"
        )
        .await,
        StatusCode::TOO_MANY_REQUESTS,
        "every attempt counted against the address the proxy named"
    );
    assert_eq!(
        login_with(
            &server,
            &[
                ("forwarded", "for=203.0.113.61"),
                ("x-forwarded-for", "198.51.100.1")
            ],
            "forged@example.com",
            "wrong wrong wrong"
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "another client of the proxy has its own budget"
    );
    let ips = failed_login_ips(&server, "forged@example.com", 5).await;
    assert_eq!(ips.len(), 5, "{ips:?}");
    assert!(
        ips.iter()
            .all(|ip| ip == "203.0.113.60" || ip == "203.0.113.61"),
        "audited with the proxy's addresses, never the forged ones: {ips:?}"
    );
}

/// An account-wide ceiling of one failure a minute (exceeded by the second failure, and for
/// a full minute after the first: the test's requests take far less), generous per-network
/// budgets.
async fn small_account_ceiling(backend: Backend) -> Option<TestServer> {
    let config = Config {
        rate_per_account_total: nonzero(1),
        trusted_proxies: "127.0.0.0/8, ::1".parse().expect("networks"),
        ..Config::default()
    };
    TestServer::start_with(backend, config).await
}

/// Before, the account-wide ceiling answered 429 to everyone, the owner included, so ten
/// guessing networks (or one host forging `Forwarded`) locked an account out everywhere.
async fn a_distributed_run_past_the_ceiling_does_not_lock_the_owner_out(server: TestServer) {
    server.signup("owner@target.example", "target-co").await;
    let attacker = |n: u8| format!("198.18.{n}.66");
    let mut statuses = Vec::new();
    for n in 1..=10 {
        statuses.push(
            login(
                &server,
                Some(&attacker(n)),
                "owner@target.example",
                "guess guess guess",
            )
            .await,
        );
    }
    assert_eq!(statuses[0], StatusCode::UNAUTHORIZED, "{statuses:?}");
    assert!(
        statuses[1..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "past the account-wide ceiling, each guess answers 429: {statuses:?}"
    );
    assert_eq!(
        login(
            &server,
            Some("192.0.2.11"),
            "owner@target.example",
            PASSWORD
        )
        .await,
        StatusCode::OK,
        "the owner, from an eleventh network that has not failed, gets in"
    );
    for n in [1, 10] {
        assert_eq!(
            login(
                &server,
                Some(&attacker(n)),
                "owner@target.example",
                "guess guess guess"
            )
            .await,
            StatusCode::TOO_MANY_REQUESTS,
            "a guessing network stays refused"
        );
        assert_eq!(
            login(
                &server,
                Some(&attacker(n)),
                "owner@target.example",
                PASSWORD
            )
            .await,
            StatusCode::TOO_MANY_REQUESTS,
            "refused before the password is looked at: no oracle"
        );
    }
    let another = Some("198.18.12.66");
    assert_eq!(
        login(
            &server,
            another,
            "owner@target.example",
            "guess guess guess"
        )
        .await,
        StatusCode::TOO_MANY_REQUESTS,
        "yet another network's guess is checked, fails, and marks it"
    );
    assert_eq!(
        login(
            &server,
            another,
            "owner@target.example",
            "guess guess guess"
        )
        .await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // An unknown account is limited exactly alike.
    let mut unknown = Vec::new();
    for n in 1..=3 {
        unknown.push(
            login(
                &server,
                Some(&attacker(n)),
                "nobody@target.example",
                "guess guess guess",
            )
            .await,
        );
    }
    assert_eq!(
        unknown,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(
        login(
            &server,
            Some("192.0.2.11"),
            "nobody@target.example",
            "guess guess guess"
        )
        .await,
        StatusCode::TOO_MANY_REQUESTS,
        "a network that has not failed is checked; its failure past the ceiling marks it"
    );
    // The attempts were audited with the addresses the proxy named.
    let ips = failed_login_ips(&server, "owner@target.example", 11).await;
    assert_eq!(ips.len(), 11, "{ips:?}");
    assert!(ips.iter().all(|ip| ip.starts_with("198.18.")), "{ips:?}");
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
    fixture = x_forwarded_for_proxy;
    a_forged_forwarded_header_gets_no_new_budget;
    fixture = forwarded_proxy;
    in_forwarded_mode_a_forged_x_forwarded_for_gets_no_new_budget;
    fixture = small_account_ceiling;
    a_distributed_run_past_the_ceiling_does_not_lock_the_owner_out;
);
