//! `tenantkit_billing::axum::webhook_route` mounted in an axum router, on both backends:
//! genuine deliveries answer 200 once stored (once), and every refusal is a problem+json
//! with a stable code that stores nothing. One request goes over real HTTP (`axum::serve`
//! on a local socket), the rest through the router in process.

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode, header};
use tenantkit_billing::{Billing, WebhookVerifier, signature::sign};
use tenantkit_core::testing::TestDb;
use tenantkit_core::{Backend, Migrations, PROBLEM_JSON};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tower::ServiceExt as _;

const SECRET: &str = "whsec_route_test";
const LIMIT: usize = 4096;

async fn db(backend: Backend) -> Option<TestDb> {
    TestDb::new(
        backend,
        &Migrations::new().with(tenantkit_billing::migrations()),
    )
    .await
}

fn app(billing: &Billing) -> Router {
    Router::new().route(
        "/stripe/webhook",
        tenantkit_billing::axum::webhook_route(billing.clone()),
    )
}

fn event(id: &str) -> Vec<u8> {
    format!(r#"{{"id":"{id}","object":"event","type":"invoice.paid","created":1}}"#).into_bytes()
}

fn signed(body: &[u8]) -> String {
    sign(SECRET, tenantkit_core::now().unix_timestamp(), body)
}

async fn post(
    app: &Router,
    signature: Option<String>,
    body: Vec<u8>,
) -> (StatusCode, String, serde_json::Value) {
    let mut request =
        Request::post("/stripe/webhook").header(header::CONTENT_TYPE, "application/json");
    if let Some(signature) = signature {
        request = request.header("stripe-signature", signature);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body)).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .expect("body");
    (
        status,
        content_type,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

async fn the_route_stores_genuine_deliveries_and_refuses_the_rest(test_db: TestDb) {
    let billing = Billing::new(
        test_db.db.clone(),
        Some(WebhookVerifier::new(&[SECRET]).expect("verifier")),
    )
    .with_body_limit(LIMIT);
    let app = app(&billing);

    let body = event("evt_route_1");
    for _ in 0..2 {
        // A redelivery answers the same and stores nothing more.
        let (status, _, reply) = post(&app, Some(signed(&body)), body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(reply, serde_json::json!({"received": true}));
    }

    let forged = event("evt_route_forged");
    let mut big =
        br#"{"id":"evt_route_big","object":"event","type":"invoice.paid","created":1,"pad":""#
            .to_vec();
    big.extend(std::iter::repeat_n(b'x', LIMIT));
    big.extend_from_slice(b"\"}");
    let not_json = b"{not json".to_vec();
    let not_an_event = br#"{"id":"in_1","object":"invoice"}"#.to_vec();
    for (signature, body, status, code) in [
        (
            None,
            forged.clone(),
            StatusCode::BAD_REQUEST,
            "invalid_signature",
        ),
        (
            Some(sign(
                "whsec_attacker",
                tenantkit_core::now().unix_timestamp(),
                &forged,
            )),
            forged.clone(),
            StatusCode::BAD_REQUEST,
            "invalid_signature",
        ),
        (
            Some("t=abc,v1=00".to_owned()),
            forged.clone(),
            StatusCode::BAD_REQUEST,
            "invalid_signature",
        ),
        (
            Some(signed(&big)),
            big.clone(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            Some(signed(&not_json)),
            not_json.clone(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Some(signed(&not_an_event)),
            not_an_event.clone(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ] {
        let (answered, content_type, problem) = post(&app, signature, body).await;
        assert_eq!(answered, status, "{problem}");
        assert_eq!(content_type, PROBLEM_JSON, "{problem}");
        assert_eq!(problem["code"], code, "{problem}");
    }

    let stored = billing.inbox().list(None, 10).await.expect("list");
    let ids: Vec<&str> = stored.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["evt_route_1"],
        "only the genuine delivery is stored"
    );
}

/// Over real HTTP: the route served by `axum::serve` answers a signed delivery with 200 once
/// it is stored.
async fn the_route_answers_over_http(test_db: TestDb) {
    let billing = Billing::new(
        test_db.db.clone(),
        Some(WebhookVerifier::new(&[SECRET]).expect("verifier")),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(axum::serve(listener, app(&billing)).into_future());

    let body = event("evt_route_http");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let head = format!(
        "POST /stripe/webhook HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Stripe-Signature: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        signed(&body),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(&body).await.expect("write body");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    server.abort();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(r#"{"received":true}"#), "{answer}");
    let stored = billing.inbox().get("evt_route_http").await.expect("get");
    assert!(stored.is_some(), "stored before the answer");
}

tenantkit_core::backend_tests!(
    fixture = db;
    the_route_stores_genuine_deliveries_and_refuses_the_rest,
    the_route_answers_over_http
);
