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
    // Oversize: refused before anything is verified or stored.
    let mut big =
        br#"{"id":"evt_big","object":"event","type":"invoice.paid","created":1,"pad":""#.to_vec();
    big.extend(std::iter::repeat_n(b'x', 2 * 1024 * 1024));
    big.extend_from_slice(b"\"}");
    let (status, _) = post(&server, Some(sign(SECRET, now, &big)), big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    let stored = Inbox::new(server.test_db.db.clone())
        .list(None, 100)
        .await
        .expect("list");
    let ids: Vec<&str> = stored.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(stored.len(), 2, "{ids:?}");
    assert!(ids.contains(&"evt_e2e_1") && ids.contains(&"evt_e2e_2"));
    assert!(stored.iter().all(|e| e.state == EventState::Pending));
}

tenantkit_core::backend_tests!(
    fixture = server;
    deliveries_are_verified_and_stored_once
);
