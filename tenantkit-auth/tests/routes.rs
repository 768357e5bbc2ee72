//! The auth flows' mountable routes (`tenantkit_auth::routes`), driven in-process on both
//! backends: the token lifecycle over HTTP, the body and client refusals, logout-all's own
//! authentication, and the client behind trusted proxies keying the rate limits.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::routing::get;
use http::{HeaderMap, Request, StatusCode, header};
use serde_json::{Value, json};
use tenantkit_auth::flows::{AuthFlows, SignupMode};
use tenantkit_auth::routes::AuthRoutes;
use tenantkit_auth::{CachedSessionCheck, RateLimitConfig, RateLimits, StrictJwtAuthLayer};
use tenantkit_core::TrustedProxies;
use tower::ServiceExt as _;

mod support;

use support::{Flows, PASSWORD};

/// The app state of a host app, to show the routes mount into any state.
#[derive(Clone)]
struct HostState(Arc<str>);

/// A host app with its own state and route, the auth routes nested under `/auth`.
fn app(routes: &AuthRoutes) -> Router {
    Router::new()
        .route(
            "/host",
            get(|State(HostState(name)): State<HostState>| async move { name.to_string() }),
        )
        .nest("/auth", routes.router())
        .with_state(HostState("host".into()))
}

/// The answer to `request`: status, headers and the body as JSON (`Null` when empty).
async fn send(app: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.expect("body");
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("a JSON body")
    };
    (parts.status, parts.headers, json)
}

/// A `POST` of `body` (raw) from the peer `peer` (no `ConnectInfo` for `None`).
fn post_raw(path: &str, body: &str, peer: Option<&str>) -> Request<Body> {
    let mut request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .expect("request");
    if let Some(peer) = peer {
        let peer: SocketAddr = peer.parse().expect("peer");
        request.extensions_mut().insert(ConnectInfo(peer));
    }
    request
}

const PEER: &str = "198.51.100.20:40000";

fn post(path: &str, body: &Value) -> Request<Body> {
    post_raw(path, &body.to_string(), Some(PEER))
}

fn signup_body(email: &str) -> Value {
    json!({"email": email, "password": PASSWORD, "tenant_name": "Acme"})
}

fn login_body(email: &str) -> Value {
    json!({"email": email, "password": PASSWORD})
}

fn assert_no_store(headers: &HeaderMap) {
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
}

fn assert_problem(headers: &HeaderMap, body: &Value, code: &str) {
    assert_eq!(
        headers[header::CONTENT_TYPE],
        tenantkit_core::PROBLEM_JSON,
        "{body}"
    );
    assert_eq!(body["code"], code, "{body}");
}

fn refresh_token(body: &Value) -> String {
    body["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_owned()
}

/// signup → login → refresh rotates → logout → the session's refresh is refused; the
/// signup's own session is untouched, and the host's route still answers.
async fn the_token_lifecycle_over_http(f: Flows) {
    let app = app(&AuthRoutes::new(f.flows.clone()));

    let (status, headers, signed_up) =
        send(&app, post("/auth/signup", &signup_body("ada@example.com"))).await;
    assert_eq!(status, StatusCode::CREATED, "{signed_up}");
    assert_no_store(&headers);
    assert_eq!(signed_up["user"]["email"], "ada@example.com");
    let signup_refresh = refresh_token(&signed_up);

    let (status, headers, logged_in) =
        send(&app, post("/auth/login", &login_body("ada@example.com"))).await;
    assert_eq!(status, StatusCode::OK, "{logged_in}");
    assert_no_store(&headers);
    let access = logged_in["access_token"].as_str().expect("access");
    let caller = f
        .flows
        .tokens()
        .verify(access)
        .expect("a valid access token");
    assert_eq!(
        caller.tenant_id().to_string(),
        signed_up["tenant"]["id"].as_str().expect("tenant id")
    );
    let first = refresh_token(&logged_in);

    let (status, headers, rotated) = send(
        &app,
        post("/auth/refresh", &json!({"refresh_token": first})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_no_store(&headers);
    let second = refresh_token(&rotated);
    assert_ne!(second, first, "refreshing rotates the refresh token");
    assert!(rotated["access_token"].is_string());

    let (status, _, body) = send(
        &app,
        post("/auth/logout", &json!({"refresh_token": second})),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(body, Value::Null);

    let (status, headers, body) = send(
        &app,
        post("/auth/refresh", &json!({"refresh_token": second})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_problem(&headers, &body, "invalid_token");

    // Another session of the same user (the signup's) is not the logged-out one.
    let (status, _, body) = send(
        &app,
        post("/auth/refresh", &json!({"refresh_token": signup_refresh})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let host = Request::get("/host").body(Body::empty()).expect("request");
    let response = app.clone().oneshot(host).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
}

/// Bodies that are not the request answer problems with stable codes, before any flow runs.
async fn bad_bodies_answer_problems_with_stable_codes(f: Flows) {
    let app = app(&AuthRoutes::new(f.flows.clone()));
    for path in [
        "/auth/signup",
        "/auth/login",
        "/auth/refresh",
        "/auth/logout",
    ] {
        let (status, headers, body) = send(&app, post_raw(path, "{oops", Some(PEER))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_problem(&headers, &body, "bad_request");

        let (status, headers, body) = send(&app, post_raw(path, "[]", Some(PEER))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
        assert_problem(&headers, &body, "validation_failed");

        let (status, headers, body) =
            send(&app, post_raw(path, r#"{"surprise": 1}"#, Some(PEER))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
        assert_problem(&headers, &body, "validation_failed");

        let mut plain = post_raw(path, "{}", Some(PEER));
        plain.headers_mut().remove(header::CONTENT_TYPE);
        let (status, headers, body) = send(&app, plain).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{path}: {body}");
        assert_problem(&headers, &body, "unsupported_media_type");
    }
    // A body over the routes' own limit is refused before it is parsed, although the host
    // app allows far more.
    let wide = crate::app(&AuthRoutes::new(f.flows.clone())).layer(DefaultBodyLimit::max(1 << 20));
    let huge = format!(
        r#"{{"email": "ada@example.com", "pad": "{}"}}"#,
        "x".repeat(17 * 1024)
    );
    for path in [
        "/auth/signup",
        "/auth/login",
        "/auth/refresh",
        "/auth/logout",
    ] {
        let (status, headers, body) = send(&wide, post_raw(path, &huge, Some(PEER))).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{path}: {body}");
        assert_problem(&headers, &body, "payload_too_large");
    }
    let narrow = crate::app(&AuthRoutes::new(f.flows.clone()).with_body_limit(80));
    let (status, _, body) = send(&narrow, post("/auth/login", &login_body("a@example.com"))).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a small body passes: {body}"
    );
    let (status, _, body) = send(
        &narrow,
        post("/auth/signup", &signup_body("long@example.com")),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    // The refusing field is named.
    let mut body = signup_body("ada@example.com");
    body["role"] = json!("owner");
    let (_, _, problem) = send(&app, post("/auth/signup", &body)).await;
    assert_eq!(problem["errors"][0]["field"], "role", "{problem}");
}

/// A request without `ConnectInfo` (the app not served with connection info) is a loud 500,
/// as tenantkit-core's client extractor answers, and the flow does not run: the same signup
/// then succeeds once the peer is known.
async fn a_missing_connect_info_is_a_loud_error(f: Flows) {
    let app = app(&AuthRoutes::new(f.flows.clone()));
    let body = signup_body("ada@example.com").to_string();
    let (status, headers, problem) = send(&app, post_raw("/auth/signup", &body, None)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{problem}");
    assert_problem(&headers, &problem, "internal_error");
    let login = login_body("ada@example.com").to_string();
    let (status, _, problem) = send(&app, post_raw("/auth/login", &login, None)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{problem}");

    let (status, _, signed_up) = send(&app, post_raw("/auth/signup", &body, Some(PEER))).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "nothing was created before: {signed_up}"
    );
}

/// Logout-all verifies its caller itself: 401 with a challenge without a token or with a bad
/// one; with a valid one, every session of the user ends.
async fn logout_all_needs_a_caller(f: Flows) {
    let app = app(&AuthRoutes::new(f.flows.clone()));
    let (_, _, signed_up) = send(&app, post("/auth/signup", &signup_body("ada@example.com"))).await;
    let (_, _, logged_in) = send(&app, post("/auth/login", &login_body("ada@example.com"))).await;

    let (status, headers, body) = send(&app, post_raw("/auth/logout-all", "", Some(PEER))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_problem(&headers, &body, "unauthenticated");
    assert!(headers.contains_key(header::WWW_AUTHENTICATE));

    let mut forged = post_raw("/auth/logout-all", "", Some(PEER));
    forged.headers_mut().insert(
        header::AUTHORIZATION,
        "Bearer not.a.token".parse().expect("header"),
    );
    let (status, _, body) = send(&app, forged).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["code"], "invalid_token", "{body}");

    let access = logged_in["access_token"].as_str().expect("access");
    let mut request = post_raw("/auth/logout-all", "", Some(PEER));
    let bearer = format!("Bearer {access}");
    request
        .headers_mut()
        .insert(header::AUTHORIZATION, bearer.parse().expect("header"));
    let (status, _, body) = send(&app, request).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    for tokens in [&signed_up, &logged_in] {
        let refresh = json!({"refresh_token": refresh_token(tokens)});
        let (status, _, body) = send(&app, post("/auth/refresh", &refresh)).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "every session ended: {body}"
        );
    }
}

/// With `with_auth_layer`, logout-all is verified by the app's layer: a strict one refuses
/// the still-unexpired access token of a logged-out session, which the default accepts.
async fn a_strict_layer_guards_logout_all(f: Flows) {
    let plain = app(&AuthRoutes::new(f.flows.clone()));
    let check = CachedSessionCheck::new(Arc::new(f.flows.sessions().clone()))
        .with_revocations(f.flows.sessions().revocations());
    let strict = app(&AuthRoutes::new(f.flows.clone())
        .with_auth_layer(StrictJwtAuthLayer::new(f.flows.tokens().clone(), check)));
    let (_, _, signed_up) = send(
        &plain,
        post("/auth/signup", &signup_body("ada@example.com")),
    )
    .await;
    let access = signed_up["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    let refresh = json!({"refresh_token": refresh_token(&signed_up)});
    let (status, _, _) = send(&plain, post("/auth/logout", &refresh)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let logout_all = || {
        let mut request = post_raw("/auth/logout-all", "", Some(PEER));
        let bearer = format!("Bearer {access}");
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, bearer.parse().expect("header"));
        request
    };
    let (status, _, body) = send(&strict, logout_all()).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the session is over: {body}"
    );
    let (status, _, body) = send(&plain, logout_all()).await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "the default only verifies the token: {body}"
    );
}

/// A verify-first signup answers 202 `{"status": "check_your_email"}`, never cached.
async fn verify_first_signup_answers_check_your_email(f: Flows) {
    let flows: AuthFlows = f.flows.clone().with_signup_mode(SignupMode::VerifyFirst);
    let app = app(&AuthRoutes::new(flows));
    for _ in 0..2 {
        // The same answer for a new and a registered address.
        let (status, headers, body) =
            send(&app, post("/auth/signup", &signup_body("ada@example.com"))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_no_store(&headers);
        assert_eq!(body, json!({"status": "check_your_email"}));
    }
}

/// The rate limits key on the client: the peer, or behind a trusted proxy the address its
/// header names, so two clients behind one proxy do not share a bucket, and one client
/// cannot escape its own by naming another address to an untrusted peer.
async fn the_client_behind_trusted_proxies_keys_the_limits(f: Flows) {
    let one_a_minute = RateLimitConfig {
        per_network_per_minute: NonZeroU32::MIN,
        ..RateLimitConfig::default()
    };
    let limited = |flows: &AuthFlows| {
        flows
            .clone()
            .with_limits(Arc::new(RateLimits::new(one_a_minute)))
    };
    let proxies: TrustedProxies = "10.0.0.0/8".parse().expect("proxies");
    let behind = app(&AuthRoutes::new(limited(&f.flows)).with_trusted_proxies(Arc::new(proxies)));
    let signup_via = |email: &str, peer: &str, forwarded: &str| {
        let body = signup_body(email).to_string();
        let mut request = post_raw("/auth/signup", &body, Some(peer));
        request
            .headers_mut()
            .insert("x-forwarded-for", forwarded.parse().expect("header"));
        request
    };
    let proxy = "10.1.2.3:443";
    let (status, _, body) = send(&behind, signup_via("a@example.com", proxy, "203.0.113.1")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, headers, body) =
        send(&behind, signup_via("b@example.com", proxy, "203.0.113.1")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_problem(&headers, &body, "rate_limited");
    assert!(headers.contains_key(header::RETRY_AFTER));
    let (status, _, body) = send(&behind, signup_via("c@example.com", proxy, "203.0.113.2")).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "another client behind the proxy: {body}"
    );

    // Trusting no proxy (the default), the header names nobody: the peer is the client.
    let direct = app(&AuthRoutes::new(limited(&f.flows)));
    let peer = "203.0.113.9:5000";
    let (status, _, body) = send(&direct, signup_via("d@example.com", peer, "192.0.2.1")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _, body) = send(&direct, signup_via("e@example.com", peer, "192.0.2.2")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
}

tenantkit_core::backend_tests!(
    fixture = support::flows;
    the_token_lifecycle_over_http,
    bad_bodies_answer_problems_with_stable_codes,
    a_missing_connect_info_is_a_loud_error,
    logout_all_needs_a_caller,
    a_strict_layer_guards_logout_all,
    verify_first_signup_answers_check_your_email,
    the_client_behind_trusted_proxies_keys_the_limits
);
