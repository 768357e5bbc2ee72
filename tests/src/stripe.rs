//! A local stand-in for Stripe's API (`POST /v1/checkout/sessions`,
//! `/v1/billing_portal/sessions`): it records every request and answers as Stripe would
//! (async-stripe's client parses the answers), or fails on demand.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::response::IntoResponse;

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The path.
    pub path: String,
    /// Its `Authorization` header.
    pub authorization: String,
    /// Its `Stripe-Version` header.
    pub stripe_version: String,
    /// The form fields, in order.
    pub form: Vec<(String, String)>,
}

/// The stand-in's record, and a switch to make it fail.
#[derive(Debug, Clone, Default)]
pub struct StandIn {
    /// Every request, in order.
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    /// Answer with this status and a Stripe error instead (e.g. 402, 500).
    pub fail_with: Arc<Mutex<Option<u16>>>,
}

async fn record(state: &StandIn, path: &str, headers: &HeaderMap, body: &str) -> Option<u16> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let form = url_pairs(body);
    state.requests.lock().expect("lock").push(Recorded {
        path: path.to_owned(),
        authorization: header("authorization"),
        stripe_version: header("stripe-version"),
        form,
    });
    *state.fail_with.lock().expect("lock")
}

fn url_pairs(body: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{body}"))
        .expect("a form body")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn stripe_error(status: u16) -> axum::response::Response {
    let body = serde_json::json!({"error": {"type": "card_error", "message": "declined"}});
    (
        AxumStatus::from_u16(status).expect("status"),
        axum::Json(body),
    )
        .into_response()
}

async fn checkout_sessions(
    State(state): State<StandIn>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    if let Some(status) = record(&state, "/v1/checkout/sessions", &headers, &body).await {
        return stripe_error(status);
    }
    let n = state.requests.lock().expect("lock").len();
    axum::Json(tenantkit_billing::testing::checkout_session_answer(
        &format!("cs_test_{n}"),
        &format!("https://checkout.stripe.test/c/pay/cs_test_{n}"),
    ))
    .into_response()
}

async fn portal_sessions(
    State(state): State<StandIn>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    if let Some(status) = record(&state, "/v1/billing_portal/sessions", &headers, &body).await {
        return stripe_error(status);
    }
    let customer = url_pairs(&body)
        .into_iter()
        .find(|(k, _)| k == "customer")
        .map(|(_, v)| v)
        .unwrap_or_default();
    axum::Json(tenantkit_billing::testing::portal_session_answer(
        "bps_test_1",
        &customer,
        "https://billing.stripe.test/p/session/test_1",
    ))
    .into_response()
}

/// Starts the stand-in on 127.0.0.1; answers its record and base URL (for
/// `TENANTKIT_STRIPE_API_BASE`).
///
/// # Panics
/// When it cannot listen.
pub async fn stand_in() -> (StandIn, String) {
    let state = StandIn::default();
    let app = axum::Router::new()
        .route(
            "/v1/checkout/sessions",
            axum::routing::post(checkout_sessions),
        )
        .route(
            "/v1/billing_portal/sessions",
            axum::routing::post(portal_sessions),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}/", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (state, base)
}
