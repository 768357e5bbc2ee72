//! `POST /v1/billing/stripe/webhook` over real HTTP: genuine deliveries are stored once and
//! acknowledged; forged, stale, unsigned and oversize ones are refused with a problem and
//! store nothing.

use reqwest::StatusCode;
use tenantkit_billing::{EventState, Inbox, signature::sign};
use tenantkit_core::Backend;
use tenantkit_e2e::TestServer;
use tenantkit_server::Config;

const SECRET: &str = "whsec_e2e_primary";

async fn server(backend: Backend) -> Option<TestServer> {
    TestServer::start_with(
        backend,
        Config {
            stripe_webhook_secrets: vec!["whsec_e2e_old".into(), SECRET.into()],
            ..Config::default()
        },
    )
    .await
}

async fn post(
    server: &TestServer,
    signature: Option<String>,
    body: Vec<u8>,
) -> (StatusCode, serde_json::Value) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let mut request = client
        .post(format!("{}/v1/billing/stripe/webhook", server.base_url))
        .header("content-type", "application/json; charset=utf-8");
    if let Some(signature) = signature {
        request = request.header("stripe-signature", signature);
    }
    let response = request.body(body).send().await.expect("send");
    let status = response.status();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

async fn deliveries_are_verified_and_stored_once(server: TestServer) {
    let now = tenantkit_core::now().unix_timestamp();
    let body = br#"{"id":"evt_e2e_1","object":"event","type":"customer.subscription.created","created":1700000000,"data":{"object":{"id":"sub_1"}}}"#.to_vec();
    let (status, reply) = post(&server, Some(sign(SECRET, now, &body)), body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply, serde_json::json!({"received": true}));
    // The same event again (Stripe retries): acknowledged, not stored twice.
    let (status, _) = post(&server, Some(sign(SECRET, now, &body)), body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    // An unknown type is stored and acknowledged too.
    let unknown =
        br#"{"id":"evt_e2e_2","object":"event","type":"v3.something.new","created":1}"#.to_vec();
    let (status, _) = post(&server, Some(sign("whsec_e2e_old", now, &unknown)), unknown).await;
    assert_eq!(status, StatusCode::OK);

    let forged =
        br#"{"id":"evt_forged","object":"event","type":"invoice.paid","created":1}"#.to_vec();
    for (signature, body) in [
        (None, forged.clone()),
        (Some(sign("whsec_attacker", now, &forged)), forged.clone()),
        (Some(sign(SECRET, now - 3600, &forged)), forged.clone()),
        (Some(sign(SECRET, now + 3600, &forged)), forged.clone()),
        (Some("t=abc,v1=00".to_owned()), forged.clone()),
        (Some(sign(SECRET, now, &body)), forged.clone()), // another body's signature
    ] {
        let (status, problem) = post(&server, signature, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        assert_eq!(problem["code"], "invalid_signature");
    }
    // Oversize for the inbox: refused before anything is verified or stored. The body is over
    // the inbox's limit but under the server's, so the server reads all of it and the client
    // always reads the answer. (A body over the server's own limit is refused from its
    // Content-Length before it is read; then a client still writing may see a broken pipe
    // instead of the 413: bad_input.rs covers that limit with a body that fits in the socket
    // buffers.)
    let pad = tenantkit_billing::DEFAULT_BODY_LIMIT + 64 * 1024;
    assert!(
        pad + 1024 < Config::default().body_limit,
        "under the server's limit"
    );
    let mut big =
        br#"{"id":"evt_big","object":"event","type":"invoice.paid","created":1,"pad":""#.to_vec();
    big.extend(std::iter::repeat_n(b'x', pad));
    big.extend_from_slice(b"\"}");
    let (status, problem) = post(&server, Some(sign(SECRET, now, &big)), big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{problem}");
    assert_eq!(problem["code"], "payload_too_large");

    let stored = Inbox::new(server.test_db.db.clone())
        .list(None, 100)
        .await
        .expect("list");
    let ids: Vec<&str> = stored.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(stored.len(), 2, "{ids:?}");
    assert!(ids.contains(&"evt_e2e_1") && ids.contains(&"evt_e2e_2"));
    // The server's worker may already have handled them; none is a dead letter.
    assert!(stored.iter().all(|e| e.state != EventState::Dead));
}

/// Seats (invitations) and storage (upload intents) switch with the plan a verified
/// subscription buys, and back when it ends; `GET /v1/billing` shows it; every change is
/// audited.
async fn entitlements_follow_the_plan(backend: Backend) {
    let plans = tempfile::NamedTempFile::new().expect("plans file");
    std::fs::write(
        plans.path(),
        "[plans.free]\nseats = 2\nstorage_bytes = 2000\n\
         [plans.pro]\nstripe_prices = [\"price_pro\"]\nseats = 10\nstorage_bytes = 1000000\nfeatures = [\"sso\"]\n",
    )
    .expect("write plans");
    let Some(server) = TestServer::start_with(
        backend,
        Config {
            stripe_webhook_secrets: vec![SECRET.into()],
            plans_file: Some(plans.path().to_owned()),
            ..Config::default()
        },
    )
    .await
    else {
        return;
    };
    let owner = &server.world.a.principal;
    let tenant = server.world.a.tenant.id;
    let free = server
        .call(Some(owner), reqwest::Method::GET, "/v1/billing", None)
        .await;
    assert_eq!(free.status, StatusCode::OK, "{}", free.body);
    assert_eq!(free.body["plan"], "free");
    assert_eq!(free.body["status"], "none");
    assert_eq!(free.body["entitlements"]["seats"], 2);

    let invite = |email: &str| {
        let body = serde_json::json!({"email": email, "role": "member"});
        let owner = owner.clone();
        let server = &server;
        async move {
            server
                .call(
                    Some(&owner),
                    reqwest::Method::POST,
                    "/v1/invitations",
                    Some(body),
                )
                .await
        }
    };
    let upload = || {
        let body = serde_json::json!({"filename": "a.png", "content_type": "image/png",
            "size": 5000, "sha256": "ab".repeat(32)});
        let owner = owner.clone();
        let server = &server;
        async move {
            server
                .call(
                    Some(&owner),
                    reqwest::Method::POST,
                    "/v1/uploads",
                    Some(body),
                )
                .await
        }
    };
    // Free: the owner plus one invitation fill the two seats; 5,000 bytes are over 2,000.
    // Eight invitations at once race for the one free seat: exactly one gets it.
    let emails: Vec<String> = (0..8).map(|i| format!("racer{i}@example.com")).collect();
    let raced = futures_util::future::join_all(emails.iter().map(|email| invite(email))).await;
    let won = raced
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    assert_eq!(
        won,
        1,
        "{:?}",
        raced.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for lost in raced.iter().filter(|r| r.status != StatusCode::CREATED) {
        assert_eq!(lost.status, StatusCode::FORBIDDEN, "{}", lost.body);
        assert_eq!(lost.body["code"], "quota_exceeded");
    }
    let refused = invite("two@example.com").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert_eq!(refused.body["code"], "quota_exceeded");
    let refused = upload().await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert_eq!(refused.body["code"], "quota_exceeded");

    // A verified subscription (out of order: the subscription before its checkout session).
    let life = tenantkit_billing::testing::SubscriptionLife::new(
        &tenant.to_string(),
        "price_pro",
        "e2e",
        1_700_000_000,
    )
    .checkout_completed(0)
    .subscription_event("created", 1, "active")
    .deleted(5);
    let now = tenantkit_core::now().unix_timestamp();
    let events = life.events();
    for event in [&events[1], &events[0]] {
        let (status, _) = post(
            &server,
            Some(event.signature(SECRET, now)),
            event.body.clone(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let pro = wait_for_plan(&server, owner, "pro").await;
    assert_eq!(pro["status"], "active");
    assert_eq!(pro["entitlements"]["seats"], 10);
    assert_eq!(pro["entitlements"]["features"], serde_json::json!(["sso"]));
    assert_eq!(invite("two@example.com").await.status, StatusCode::CREATED);
    assert_eq!(upload().await.status, StatusCode::CREATED);

    // The subscription ends: back to free, where the seats and bytes already taken stay but
    // nothing more fits.
    let (status, _) = post(
        &server,
        Some(events[2].signature(SECRET, now)),
        events[2].body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let free = wait_for_plan(&server, owner, "free").await;
    assert_eq!(free["status"], "canceled");
    assert_eq!(
        invite("three@example.com").await.status,
        StatusCode::FORBIDDEN
    );

    // A member cannot read billing; the plan changes are in the audit log.
    let (_, member) = server
        .add_user(&server.world.a, tenantkit_core::Role::Member)
        .await;
    let hidden = server
        .call(Some(&member), reqwest::Method::GET, "/v1/billing", None)
        .await;
    assert_eq!(hidden.status, StatusCode::FORBIDDEN);
    let log = server
        .call(Some(owner), reqwest::Method::GET, "/v1/audit-log", None)
        .await;
    let changes = log.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["action"] == "billing.plan_changed")
        .count();
    assert_eq!(changes, 2, "{}", log.body);
}

/// Polls `GET /v1/billing` until the background worker has applied the events (bounded).
async fn wait_for_plan(
    server: &TestServer,
    owner: &tenantkit_core::Principal,
    plan: &str,
) -> serde_json::Value {
    for _ in 0..600 {
        let reply = server
            .call(Some(owner), reqwest::Method::GET, "/v1/billing", None)
            .await;
        if reply.body["plan"] == plan {
            return reply.body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the plan never became {plan}");
}

tenantkit_core::backend_tests!(
    fixture = server;
    deliveries_are_verified_and_stored_once;
    fixture = tenantkit_core::testing::backend;
    entitlements_follow_the_plan
);
