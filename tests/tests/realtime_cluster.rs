//! Two server instances of one deployment (one database, one Redis or the PostgreSQL
//! backplane, the same keys), as behind
//! a load balancer: a change made through either reaches the WebSocket clients of both, with
//! the same `seq`; a client that reconnects to the other instance resumes; a logout through
//! one closes the session's sockets on the other and evicts the other's session cache (the
//! Redis revocation bus); wrong passwords through either spend one budget (Redis rate
//! limits). Every wait is a hang guard; nothing asserts a duration.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantkit_core::{Backend, Principal, Role};
use tenantkit_e2e::TestServer;
use tenantkit_server::{Config, RealtimeBackplaneKind};

fn config(redis: Option<&str>, kind: RealtimeBackplaneKind) -> Config {
    Config {
        redis_url: redis.map(str::to_owned),
        realtime_backplane: kind,
        // Session answers are cached as long as the server allows (5 s): the revocation bus
        // evicts them at once.
        session_check_ttl_ms: 5_000,
        ..Config::default()
    }
}

/// Instances A and B sharing `kind` (Redis, or the PostgreSQL database); `None` when a
/// service is not available outside CI, or for the PostgreSQL backplane on SQLite.
async fn cluster(
    backend: Backend,
    kind: RealtimeBackplaneKind,
) -> Option<(TestServer, TestServer)> {
    let redis = match kind {
        RealtimeBackplaneKind::Redis => Some(tenantkit_e2e::redis::url()?),
        _ if backend == Backend::Sqlite => return None,
        _ => None,
    };
    let a = TestServer::start_with(backend, config(redis.as_deref(), kind)).await?;
    let b = a.start_beside(config(redis.as_deref(), kind)).await;
    Some((a, b))
}

async fn create(server: &TestServer, who: &Principal, path: &str, body: Value) -> Value {
    let reply = server.call(Some(who), Method::POST, path, Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{path}: {}", reply.body);
    reply.body
}

/// The next `event` frame with this name (other events of the tenant may interleave).
async fn event_named(ws: &mut tenantkit_e2e::ws::Ws, name: &str) -> Value {
    loop {
        let event = ws.event().await;
        if event["event"] == name {
            return event;
        }
    }
}

async fn a_change_on_either_instance_reaches_both_with_one_seq(backend: Backend) {
    changes_cross(backend, RealtimeBackplaneKind::Redis).await;
}

async fn a_change_crosses_instances_over_postgres(backend: Backend) {
    changes_cross(backend, RealtimeBackplaneKind::Postgres).await;
}

async fn changes_cross(backend: Backend, kind: RealtimeBackplaneKind) {
    let Some((a, b)) = cluster(backend, kind).await else {
        return;
    };
    let owner = a.world.a.principal.clone();
    let mut on_a = a.ws(&owner).await;
    let mut on_b = b.ws(&owner).await;
    on_a.subscribe("tenant", None).await;
    on_b.subscribe("tenant", None).await;
    // The other tenant's subscriber on B hears nothing of tenant A.
    let mut other = b.ws(&b.world.b.principal).await;
    other.subscribe("tenant", None).await;

    let project = create(&a, &owner, "/v1/projects", json!({ "name": "via A" })).await;
    let project_id = project["id"].as_str().expect("id").to_owned();
    let first_a = event_named(&mut on_a, "project.created").await;
    let first_b = event_named(&mut on_b, "project.created").await;
    assert_eq!(first_a, first_b, "one event, one seq, on both instances");
    assert_eq!(first_b["data"]["id"], project_id.as_str());

    let second = create(&b, &owner, "/v1/projects", json!({ "name": "via B" })).await;
    let second_a = event_named(&mut on_a, "project.created").await;
    let second_b = event_named(&mut on_b, "project.created").await;
    assert_eq!(second_a, second_b);
    assert_eq!(second_a["data"]["id"], second["id"]);
    assert!(
        second_a["seq"].as_u64() > first_a["seq"].as_u64(),
        "one counter per channel across instances: {first_a} then {second_a}"
    );
    assert!(
        other.until_pong().await.is_empty(),
        "tenant B heard nothing"
    );

    // A client of A drops; tasks are created through B; it comes back on A and resumes.
    let channel = format!("project:{project_id}");
    on_b.subscribe(&channel, None).await;
    drop(on_a);
    for title in ["one", "two"] {
        create(
            &b,
            &owner,
            &format!("/v1/projects/{project_id}/tasks"),
            json!({ "title": title }),
        )
        .await;
    }
    // Both reached B's client (so both are published) before the resume asks for them.
    assert_eq!(event_named(&mut on_b, "task.created").await["seq"], 1);
    assert_eq!(event_named(&mut on_b, "task.created").await["seq"], 2);
    let mut resumed = a.ws(&owner).await;
    let answer = resumed.subscribe(&channel, Some(0)).await;
    assert_eq!(answer["recovered"], true, "{answer}");
    assert_eq!(answer["seq"], 2);
    for (n, title) in [(1, "one"), (2, "two")] {
        let event = resumed.event().await;
        assert_eq!(event["seq"], n);
        assert_eq!(event["data"]["title"], title);
    }
}

async fn a_logout_on_one_instance_closes_sockets_and_caches_on_the_other(backend: Backend) {
    logouts_cross(backend, RealtimeBackplaneKind::Redis).await;
}

async fn a_logout_crosses_instances_over_postgres(backend: Backend) {
    logouts_cross(backend, RealtimeBackplaneKind::Postgres).await;
}

async fn logouts_cross(backend: Backend, kind: RealtimeBackplaneKind) {
    let Some((a, b)) = cluster(backend, kind).await else {
        return;
    };
    let (_, member) = a.add_user(&a.world.a, Role::Member).await;
    let token = a.tokens.issue(&member).expect("token").token;
    // B has answered for this session (and cached the answer).
    let before = b
        .call_with_token(Some(&token), Method::GET, "/v1/projects", None)
        .await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.body);
    let mut on_b = b.ws(&member).await;
    on_b.subscribe("tenant", None).await;
    let mut on_a = a.ws(&member).await;

    let out = a
        .call_with_token(Some(&token), Method::POST, "/v1/auth/logout-all", None)
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{}", out.body);
    assert_eq!(on_a.closed().await, 4002);
    assert_eq!(on_b.closed().await, 4002, "B closed the socket");
    // B's cache was evicted: the same unexpired token is refused there at once.
    let after = b
        .call_with_token(Some(&token), Method::GET, "/v1/projects", None)
        .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED, "{}", after.body);
    let refused = b
        .ws_connect("", &[("authorization", &format!("Bearer {token}"))])
        .await
        .expect_err("refused");
    assert_eq!(refused.status, 401);
}

/// Wrong passwords through A and B spend one budget (Redis rate limits): the fourth of a
/// budget of 3 answers 429 whichever instance takes it.
async fn login_failures_count_once_across_instances(backend: Backend) {
    let Some(redis) = tenantkit_e2e::redis::url() else {
        return;
    };
    let config = || Config {
        rate_per_account: std::num::NonZeroU32::new(3).expect("3"),
        ..config(Some(&redis), RealtimeBackplaneKind::Redis)
    };
    let Some(a) = TestServer::start_with(backend, config()).await else {
        return;
    };
    let b = a.start_beside(config()).await;
    // An unknown account is limited exactly like a registered one. Its own address: the
    // tests of this binary share one Redis.
    let email = format!("nobody-{}@example.com", uuid::Uuid::now_v7());
    let attempt = json!({"email": email, "password": "not the password at all"});
    for server in [&a, &b, &a] {
        let reply = server
            .call(None, Method::POST, "/v1/auth/login", Some(attempt.clone()))
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    }
    for server in [&b, &a] {
        let reply = server
            .call(None, Method::POST, "/v1/auth/login", Some(attempt.clone()))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            reply.body
        );
        assert_eq!(reply.body["code"], "rate_limited", "{}", reply.body);
    }
}

tenantkit_core::backend_tests!(
    fixture = tenantkit_core::testing::backend;
    a_change_on_either_instance_reaches_both_with_one_seq,
    a_logout_on_one_instance_closes_sockets_and_caches_on_the_other,
    a_change_crosses_instances_over_postgres,
    a_logout_crosses_instances_over_postgres,
    login_failures_count_once_across_instances;
);
