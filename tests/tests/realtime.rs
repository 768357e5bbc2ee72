//! tenantkit-realtime through the reference server: the handshake's refusals, tenant
//! isolation (a matrix over channel kinds × callers), events from committed changes, resume
//! with `since`, limits (1009), slow consumers (4008), token expiry (4001) and revocation
//! (4002). Every wait is a hang guard; nothing asserts a duration.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantkit_core::{Backend, Principal, Role};
use tenantkit_e2e::TestServer;
use tenantkit_e2e::ws::{Frame, HANG_GUARD};
use tenantkit_server::Config;

const APP_ORIGIN: &str = "https://app.example.com";

async fn realtime_server(backend: Backend) -> Option<TestServer> {
    let config = Config {
        cors_origins: vec![APP_ORIGIN.to_owned()],
        // The session check answers from the database at once (revocations also evict it).
        session_check_ttl_ms: 0,
        realtime_history: 5,
        ..Config::default()
    };
    TestServer::start_with(backend, config).await
}

async fn create(server: &TestServer, who: &Principal, path: &str, body: Value) -> Value {
    let reply = server.call(Some(who), Method::POST, path, Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{path}: {}", reply.body);
    reply.body
}

async fn project(server: &TestServer, who: &Principal, name: &str) -> String {
    let body = create(server, who, "/v1/projects", json!({ "name": name })).await;
    body["id"].as_str().expect("id").to_owned()
}

async fn task(server: &TestServer, who: &Principal, project: &str, title: &str) -> Value {
    create(
        server,
        who,
        &format!("/v1/projects/{project}/tasks"),
        json!({ "title": title }),
    )
    .await
}

async fn handshakes_are_refused_without_valid_credentials(server: TestServer) {
    let owner = &server.world.a.principal;
    let token = server.tokens.issue(owner).expect("token").token;
    let bearer = format!("Bearer {token}");
    let refused = |status: u16, code: &str, r: Result<_, tenantkit_e2e::ws::Refused>| {
        let refused = r.expect_err("refused");
        assert_eq!(refused.status, status, "{:?}", refused.body);
        assert_eq!(refused.body["code"], code, "{:?}", refused.body);
    };
    // No credentials, a forged token, a token in the URL.
    refused(401, "unauthenticated", server.ws_connect("", &[]).await);
    let forged = format!("{}x", &bearer);
    refused(
        401,
        "invalid_token",
        server.ws_connect("", &[("authorization", &forged)]).await,
    );
    refused(
        400,
        "bad_request",
        server
            .ws_connect(&format!("access_token={token}"), &[])
            .await,
    );
    // A browser on a foreign origin, even with a valid token; the allowed origin connects.
    refused(
        403,
        "forbidden",
        server
            .ws_connect(
                "",
                &[
                    ("authorization", &bearer),
                    ("origin", "https://evil.example"),
                ],
            )
            .await,
    );
    assert!(
        server
            .ws_connect("", &[("authorization", &bearer), ("origin", APP_ORIGIN)])
            .await
            .is_ok()
    );
    // A subprotocol other than v1.
    refused(
        400,
        "bad_request",
        server
            .ws_connect(
                "",
                &[
                    ("authorization", &bearer),
                    ("sec-websocket-protocol", "other.v9"),
                ],
            )
            .await,
    );
    // Not an upgrade at all.
    let plain = server
        .request(owner, Method::GET, "/v1/realtime")
        .send()
        .await
        .expect("send");
    assert_eq!(plain.status(), StatusCode::BAD_REQUEST);

    // Tickets: single use; unknown and expired ones refused.
    let ticket = server.ticket(owner).await;
    assert!(ticket.starts_with("rt_"));
    let mut ws = server
        .ws_connect(&format!("ticket={ticket}"), &[("origin", APP_ORIGIN)])
        .await
        .expect("a ticket connects once");
    assert_eq!(ws.subscribe("tenant", None).await["type"], "subscribed");
    refused(
        401,
        "invalid_token",
        server.ws_connect(&format!("ticket={ticket}"), &[]).await,
    );
    refused(
        401,
        "invalid_token",
        server.ws_connect("ticket=rt_unknown", &[]).await,
    );
    let tickets = server.realtime.tickets().expect("tickets");
    let short = tickets.clone().with_ttl(std::time::Duration::from_secs(1));
    let expired = short.issue(owner).await.expect("issue").ticket;
    // Past its expiry for sure (the database compares with its own clock reading at redeem).
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    refused(
        401,
        "invalid_token",
        server.ws_connect(&format!("ticket={expired}"), &[]).await,
    );

    // A revoked session: logout everywhere, then the same still-unexpired token is refused.
    let (_, member) = server.add_user(&server.world.a, Role::Member).await;
    let member_token = server.tokens.issue(&member).expect("token").token;
    let member_bearer = format!("Bearer {member_token}");
    assert!(
        server
            .ws_connect("", &[("authorization", &member_bearer)])
            .await
            .is_ok()
    );
    let out = server
        .call_with_token(
            Some(&member_token),
            Method::POST,
            "/v1/auth/logout-all",
            None,
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{}", out.body);
    refused(
        401,
        "invalid_token",
        server
            .ws_connect("", &[("authorization", &member_bearer)])
            .await,
    );
    // The ticket route itself needs a live session.
    let reply = server
        .call_with_token(
            Some(&member_token),
            Method::POST,
            "/v1/realtime/ticket",
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

/// Who subscribes to what: tenant A's owner, a member of A's team, a member outside it, a
/// viewer of A, and tenant B's owner, over A's tenant channel, an open project, a project
/// restricted to the team, a missing project, B's project, an unknown kind and malformed
/// names. A refusal is `not_found` whether the channel is hidden, foreign or missing.
async fn subscriptions_follow_tenant_and_project_visibility(server: TestServer) {
    let owner = server.world.a.principal.clone();
    let (in_team_user, in_team) = server.add_user(&server.world.a, Role::Member).await;
    let (_, outside) = server.add_user(&server.world.a, Role::Member).await;
    let (_, viewer) = server.add_user(&server.world.a, Role::Viewer).await;
    let b_owner = server.world.b.principal.clone();
    let team = create(&server, &owner, "/v1/teams", json!({ "name": "core" })).await;
    let team_id = team["id"].as_str().expect("team").to_owned();
    create(
        &server,
        &owner,
        &format!("/v1/teams/{team_id}/members"),
        json!({ "user_id": in_team_user.id }),
    )
    .await;
    let open = project(&server, &owner, "open").await;
    let restricted = create(
        &server,
        &owner,
        "/v1/projects",
        json!({ "name": "secret", "team_id": team_id, "restricted": true }),
    )
    .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let foreign = project(&server, &b_owner, "b's").await;
    let missing = uuid::Uuid::now_v7().to_string();

    let channels = [
        ("tenant".to_owned(), [true, true, true, true, true]),
        (format!("project:{open}"), [true, true, true, true, false]),
        (
            format!("project:{restricted}"),
            [true, true, false, false, false],
        ),
        (format!("project:{missing}"), [false; 5]),
        (
            format!("project:{foreign}"),
            [false, false, false, false, true],
        ),
        ("invoice:123".to_owned(), [false; 5]),
    ];
    let callers = [&owner, &in_team, &outside, &viewer, &b_owner];
    for (index, caller) in callers.iter().enumerate() {
        let mut ws = server.ws(caller).await;
        for (channel, allowed) in &channels {
            let answer = ws.subscribe(channel, None).await;
            if allowed[index] {
                assert_eq!(
                    answer["type"], "subscribed",
                    "caller {index} {channel}: {answer}"
                );
                assert_eq!(answer["recovered"], true);
                assert_eq!(answer["id"], channel.as_str());
            } else {
                assert_eq!(
                    answer["type"], "error",
                    "caller {index} {channel}: {answer}"
                );
                assert_eq!(
                    answer["code"], "not_found",
                    "caller {index} {channel}: {answer}"
                );
            }
        }
        for bad in [
            "",
            "tenant:x",
            "Project:1",
            "project:a/b",
            "x".repeat(200).as_str(),
        ] {
            let answer = ws.subscribe(bad, None).await;
            assert_eq!(answer["code"], "bad_request", "{bad:?}: {answer}");
        }
        // Malformed frames answer bad_request and keep the connection.
        for frame in [
            "not json",
            r#"{"type":"shout"}"#,
            r#"{"type":"subscribe","channel":"tenant","x":1}"#,
        ] {
            ws.send_text(frame.to_owned()).await;
            assert_eq!(ws.json().await["code"], "bad_request");
        }
        // Nothing but events (of the setup, relayed after the commits) before the pong: every
        // refusal above was answered exactly once.
        let before = ws.until_pong().await;
        assert!(before.iter().all(|v| v["type"] == "event"), "{before:?}");
    }
}

async fn committed_changes_reach_subscribers_of_their_tenant_only(server: TestServer) {
    let owner = server.world.a.principal.clone();
    let b_owner = server.world.b.principal.clone();
    let mut a = server.ws(&owner).await;
    let mut b = server.ws(&b_owner).await;
    let first = a.subscribe("tenant", None).await;
    assert_eq!(first["seq"], 0, "{first}");
    assert_eq!(b.subscribe("tenant", None).await["seq"], 0);

    let project_id = project(&server, &owner, "launch").await;
    let event = a.event().await;
    assert_eq!(event["channel"], "tenant");
    assert_eq!(event["event"], "project.created");
    assert_eq!(event["seq"], 1);
    assert_eq!(event["data"]["id"], project_id.as_str());
    assert_eq!(event["data"]["name"], "launch");

    let channel = format!("project:{project_id}");
    assert_eq!(a.subscribe(&channel, None).await["seq"], 0);
    let created = task(&server, &owner, &project_id, "write the docs").await;
    let event = a.event().await;
    assert_eq!(
        (event["channel"].as_str(), event["event"].as_str()),
        (Some(channel.as_str()), Some("task.created"))
    );
    assert_eq!(event["seq"], 1);
    assert_eq!(event["data"]["id"], created["id"]);
    let task_id = created["id"].as_str().expect("id").to_owned();
    let patched = server
        .call(
            Some(&owner),
            Method::PATCH,
            &format!("/v1/tasks/{task_id}"),
            Some(json!({ "title": "done" })),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    let event = a.event().await;
    assert_eq!(
        (event["event"].as_str(), event["seq"].as_u64()),
        (Some("task.updated"), Some(2))
    );
    let deleted = server
        .call(
            Some(&owner),
            Method::DELETE,
            &format!("/v1/tasks/{task_id}"),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let event = a.event().await;
    assert_eq!(
        (event["event"].as_str(), event["seq"].as_u64()),
        (Some("task.deleted"), Some(3))
    );
    assert_eq!(event["data"]["id"], task_id.as_str());

    // A change that fails (a task in a missing project) publishes nothing.
    let failed = server
        .call(
            Some(&owner),
            Method::POST,
            &format!("/v1/projects/{}/tasks", uuid::Uuid::now_v7()),
            Some(json!({ "title": "nowhere" })),
        )
        .await;
    assert_eq!(failed.status, StatusCode::NOT_FOUND);
    // B heard nothing of A's tenant; A nothing more.
    assert!(b.until_pong().await.is_empty());
    assert!(a.until_pong().await.is_empty());
    // B cannot reach A's project channel by its id.
    assert_eq!(b.subscribe(&channel, None).await["code"], "not_found");
}

async fn a_member_who_loses_access_stops_receiving(server: TestServer) {
    let owner = server.world.a.principal.clone();
    let (user, member) = server.add_user(&server.world.a, Role::Member).await;
    let team = create(&server, &owner, "/v1/teams", json!({ "name": "ops" })).await;
    let team_id = team["id"].as_str().expect("team").to_owned();
    create(
        &server,
        &owner,
        &format!("/v1/teams/{team_id}/members"),
        json!({ "user_id": user.id }),
    )
    .await;
    let restricted = create(
        &server,
        &owner,
        "/v1/projects",
        json!({ "name": "ops only", "team_id": team_id, "restricted": true }),
    )
    .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let channel = format!("project:{restricted}");
    let mut ws = server.ws(&member).await;
    assert_eq!(ws.subscribe(&channel, None).await["type"], "subscribed");
    task(&server, &owner, &restricted, "first").await;
    // The project's own `project.created` (a restricted project is announced on its channel)
    // may be relayed after the subscription: it comes first then.
    let mut first = ws.event().await;
    if first["event"] == "project.created" {
        first = ws.event().await;
    }
    assert_eq!(first["event"], "task.created");
    // Removed from the team (an access change): the next event is not delivered; the
    // subscription ends with `forbidden`.
    let removed = server
        .call(
            Some(&owner),
            Method::DELETE,
            &format!("/v1/teams/{team_id}/members/{}", user.id),
            None,
        )
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    task(&server, &owner, &restricted, "second").await;
    let answer = ws.json().await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], "forbidden");
    assert_eq!(answer["channel"], channel.as_str());
    task(&server, &owner, &restricted, "third").await;
    assert!(ws.until_pong().await.is_empty());
    assert_eq!(ws.subscribe(&channel, None).await["code"], "not_found");
}

async fn a_client_resumes_with_since(server: TestServer) {
    let owner = server.world.a.principal.clone();
    let project_id = project(&server, &owner, "resume").await;
    let channel = format!("project:{project_id}");
    let mut ws = server.ws(&owner).await;
    ws.subscribe(&channel, None).await;
    task(&server, &owner, &project_id, "seen").await;
    let seen = ws.event().await["seq"].as_u64().expect("seq");
    drop(ws);
    // Missed while away: three events.
    for title in ["one", "two", "three"] {
        task(&server, &owner, &project_id, title).await;
    }
    // The relay publishes after the commit: wait until the channel is at seen + 3.
    let mut ws = server.ws(&owner).await;
    let answer = wait_for_seq(&mut ws, &channel, seen, seen + 3).await;
    assert_eq!(answer["recovered"], true, "{answer}");
    let mut titles = Vec::new();
    for n in 1..=3 {
        let event = ws.event().await;
        assert_eq!(event["seq"], seen + n);
        titles.push(event["data"]["title"].clone());
    }
    assert_eq!(titles, ["one", "two", "three"]);
    // Live events follow the replayed ones.
    task(&server, &owner, &project_id, "live").await;
    let live = ws.event().await;
    assert_eq!(live["seq"], seen + 4);
    // History keeps 5 events per channel here: after 6 more, `since` no longer reaches.
    drop(ws);
    let last = seen + 4;
    for n in 0..6 {
        task(&server, &owner, &project_id, &format!("flood {n}")).await;
    }
    let mut ws = server.ws(&owner).await;
    let answer = wait_for_seq(&mut ws, &channel, last, last + 6).await;
    assert_eq!(answer["recovered"], false, "{answer}");
    assert!(
        ws.until_pong().await.is_empty(),
        "nothing replayed when not recovered"
    );
    // A since beyond the channel (a reset history) is not recovered either.
    let mut other = server.ws(&owner).await;
    assert_eq!(
        other.subscribe(&channel, Some(10_000)).await["recovered"],
        false
    );
}

/// Subscribes with `since` until the channel's seq reaches `target` (the relay runs after the
/// commit), unsubscribing between tries; the `subscribed` answer.
async fn wait_for_seq(
    ws: &mut tenantkit_e2e::ws::Ws,
    channel: &str,
    since: u64,
    target: u64,
) -> Value {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        let answer = ws.subscribe(channel, Some(since)).await;
        if answer["seq"].as_u64() >= Some(target) {
            return answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the channel never reached {target}"
        );
        ws.send(json!({ "type": "unsubscribe", "channel": channel }))
            .await;
        // Drain what the subscription replayed, up to the unsubscribed answer.
        loop {
            if ws.json().await["type"] == "unsubscribed" {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn oversize_messages_close_with_1009(server: TestServer) {
    let owner = server.world.a.principal.clone();
    let mut ws = server.ws(&owner).await;
    ws.send_text(format!(
        "{{\"type\":\"ping\",\"id\":\"{}\"}}",
        "x".repeat(70 * 1024)
    ))
    .await;
    assert_eq!(ws.closed().await, 1009);
    // A frame over 16 KiB (a message under the 64 KiB limit) as well.
    let mut ws = server.ws(&owner).await;
    ws.send_text(format!(
        "{{\"type\":\"ping\",\"id\":\"{}\"}}",
        "x".repeat(20 * 1024)
    ))
    .await;
    assert_eq!(ws.closed().await, 1009);
    assert!(
        server
            .realtime
            .stats()
            .disconnects
            .get(&1009)
            .copied()
            .unwrap_or(0)
            >= 2
    );
}

async fn a_slow_consumer_is_closed_and_its_queue_dropped(server: TestServer) {
    let owner = server.world.a.principal.clone();
    let mut slow = server.ws(&owner).await;
    slow.subscribe("tenant", None).await;
    let mut fast = server.ws(&owner).await;
    fast.subscribe("tenant", None).await;
    let tenant = owner.tenant_id();
    let payload = json!({ "blob": "y".repeat(1000) });
    // The slow client reads nothing while far more than its queue and the socket buffers
    // hold is published (tens of MB). The fast one reads everything: events go out in batches
    // of 100 (about 110 KB, under the 256 KiB queue budget), each once the fast client has
    // read the previous one, so it is never behind by more than its budget, however slow the
    // machine.
    let events = 30_000_u64;
    let batch = 100_u64;
    let (progress, mut read) = tokio::sync::watch::channel(0_u64);
    let reader = tokio::spawn(async move {
        let mut last = 0;
        while last < events {
            match fast.next().await {
                Frame::Json(v) => last = v["seq"].as_u64().unwrap_or(last),
                Frame::Closed(code) => panic!("the fast client was closed: {code}"),
            }
            let _ = progress.send(last);
        }
        last
    });
    for start in (0..events).step_by(usize::try_from(batch).expect("batch")) {
        for _ in 0..batch {
            server
                .realtime
                .publish(tenant, "tenant", "blob.published", &payload)
                .await
                .expect("publish");
        }
        tokio::time::timeout(HANG_GUARD, read.wait_for(|last| *last >= start + batch))
            .await
            .expect("the fast client stopped reading")
            .expect("the reader ended early");
    }
    assert_eq!(reader.await.expect("reader"), events);
    // The slow client is cut off: 4008 when the close frame got through, or the socket
    // dropped when even that could not be written.
    let code = slow.closed().await;
    assert!(code == 4008 || code == 1006, "closed with {code}");
    let stats = server.realtime.stats();
    assert!(stats.messages_dropped > 0, "{stats:?}");
    assert_eq!(stats.disconnects.get(&4008).copied(), Some(1), "{stats:?}");
}

/// Expiry itself (4001 at the token's expiry, moved by a fresh token) is proven on a moved
/// clock in examples/hyper-auth/tests/realtime.rs; here, through the server: a ticket of an
/// already expired token is refused, and a fresh token over the socket must be of the same
/// session. Nothing here depends on how long anything takes.
async fn an_expired_connection_closes_with_4001_unless_refreshed(server: TestServer) {
    let owner = server.world.a.principal.clone();
    let tickets = server.realtime.tickets().expect("tickets").clone();
    let expired = owner
        .clone()
        .with_expires_at(tenantkit_core::now() - std::time::Duration::from_secs(1));
    let ticket = tickets.issue(&expired).await.expect("ticket").ticket;
    let refused = server
        .ws_connect(&format!("ticket={ticket}"), &[])
        .await
        .expect_err("refused");
    assert_eq!(refused.status, 401, "{:?}", refused.body);
    assert_eq!(refused.body["code"], "token_expired", "{:?}", refused.body);

    let later = owner
        .clone()
        .with_expires_at(tenantkit_core::now() + std::time::Duration::from_secs(3600));
    let ticket = tickets.issue(&later).await.expect("ticket").ticket;
    let mut ws = server
        .ws_connect(&format!("ticket={ticket}"), &[])
        .await
        .expect("connect");
    let fresh = server.tokens.issue(&owner).expect("token").token;
    ws.send(json!({ "type": "auth", "token": fresh, "id": 1 }))
        .await;
    let answer = ws.json().await;
    assert_eq!(answer["type"], "authenticated", "{answer}");
    assert!(answer["expires_in"].as_i64() > Some(60));
    assert!(ws.until_pong().await.is_empty());
    // A token of another session closes with 1008; an invalid one is an error only.
    ws.send(json!({ "type": "auth", "token": "nonsense" }))
        .await;
    assert_eq!(ws.json().await["code"], "bad_request");
    let other = server.with_live_session(&owner).await;
    let other_token = server.tokens.issue(&other).expect("token").token;
    ws.send(json!({ "type": "auth", "token": other_token }))
        .await;
    assert_eq!(ws.closed().await, 1008);
}

async fn revocations_close_the_sessions_sockets(server: TestServer) {
    let owner = server.world.a.principal.clone();
    let (user, member) = server.add_user(&server.world.a, Role::Member).await;
    let mut removed_ws = server.ws(&member).await;
    removed_ws.subscribe("tenant", None).await;
    let mut owner_ws = server.ws(&owner).await;
    owner_ws.subscribe("tenant", None).await;
    let other_session = server.with_live_session(&owner).await;
    let mut other_ws = server.ws(&other_session).await;
    // The owner removes the member: their socket closes with 4002; the owner hears it.
    let removed = server
        .call(
            Some(&owner),
            Method::DELETE,
            &format!("/v1/members/{}", user.id),
            None,
        )
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    assert_eq!(removed_ws.closed().await, 4002);
    let event = owner_ws.event().await;
    assert_eq!(event["event"], "member.removed");
    assert_eq!(event["data"]["user_id"], user.id.to_string());
    // Logout everywhere from one session closes every socket of the owner's sessions.
    let token = server.tokens.issue(&owner).expect("token").token;
    let out = server
        .call_with_token(Some(&token), Method::POST, "/v1/auth/logout-all", None)
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert_eq!(owner_ws.closed().await, 4002);
    assert_eq!(other_ws.closed().await, 4002);
}

tenantkit_core::backend_tests!(
    fixture = realtime_server;
    handshakes_are_refused_without_valid_credentials,
    subscriptions_follow_tenant_and_project_visibility,
    committed_changes_reach_subscribers_of_their_tenant_only,
    a_member_who_loses_access_stops_receiving,
    a_client_resumes_with_since,
    oversize_messages_close_with_1009,
    a_slow_consumer_is_closed_and_its_queue_dropped,
    an_expired_connection_closes_with_4001_unless_refreshed,
    revocations_close_the_sessions_sockets;
);
