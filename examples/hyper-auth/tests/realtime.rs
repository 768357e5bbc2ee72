//! tenantkit-realtime mounted in plain hyper: events published by the application reach the
//! subscribers of their tenant, and the limits hold (subscription cap, per-tenant connection
//! cap, message rate, idle timeout). Every wait is a hang guard; nothing asserts a duration.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use hyper_auth::serve;
use serde_json::{Value, json};
use tenantkit_auth::{AccessTokens, JwtConfig, KeySet, SigningKey};
use tenantkit_core::{
    Clock, ManualClock, Principal, Role, SessionId, SystemClock, TenantId, UserId,
};
use tenantkit_realtime::{Channels, Limits, Realtime};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

const HANG_GUARD: Duration = Duration::from_secs(30);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct App {
    base: String,
    tokens: AccessTokens,
    realtime: Realtime,
}

async fn app(limits: Limits) -> App {
    app_on(limits, Arc::new(SystemClock)).await
}

/// The app with tokens (and so the connections' expiry) on `clock`.
async fn app_on(limits: Limits, clock: Arc<dyn Clock>) -> App {
    let tokens = AccessTokens::with_clock(
        KeySet::new(SigningKey::generate_ed25519().expect("key")),
        JwtConfig::new("i", "a"),
        clock,
    );
    // One kind of the app's own: `note:<id>`, open to the whole tenant.
    let realtime = Realtime::builder(tokens.clone())
        .channels(Channels::new().kind("note", |_who, _id| async { Ok(true) }))
        .limits(limits)
        .build();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("ws://{}", listener.local_addr().expect("addr"));
    tokio::spawn(serve(listener, tokens.clone(), realtime.clone()));
    App {
        base,
        tokens,
        realtime,
    }
}

/// The default limits with `change` applied.
fn limits(change: impl FnOnce(&mut Limits)) -> Limits {
    let mut limits = Limits::default();
    change(&mut limits);
    limits
}

fn caller(tenant: TenantId) -> Principal {
    Principal::new(UserId::new(), tenant, Role::Member, [], SessionId::new())
}

impl App {
    /// Connects as `who`: the socket, or the refusal's status and problem body.
    async fn connect(&self, who: &Principal) -> Result<Socket, (u16, Value)> {
        let token = self.tokens.issue(who).expect("token").token;
        self.connect_with(&token).await
    }

    /// Connects with `token`.
    async fn connect_with(&self, token: &str) -> Result<Socket, (u16, Value)> {
        let mut request = format!("{}/v1/realtime", self.base)
            .into_client_request()
            .expect("request");
        let headers = request.headers_mut();
        headers.insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        headers.insert(
            "sec-websocket-protocol",
            "tenantkit.v1".parse().expect("header"),
        );
        match tokio::time::timeout(HANG_GUARD, tokio_tungstenite::connect_async(request))
            .await
            .expect("handshake within the hang guard")
        {
            Ok((socket, _)) => Ok(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_deref()
                    .map(|b| serde_json::from_slice(b).expect("problem json"))
                    .unwrap_or(Value::Null);
                Err((status, body))
            }
            Err(other) => panic!("handshake failed: {other}"),
        }
    }
}

enum Frame {
    Json(Value),
    Closed(u16),
}

async fn next(socket: &mut Socket) -> Frame {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        match tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("a frame within the hang guard")
        {
            Some(Ok(Message::Text(text))) => {
                return Frame::Json(serde_json::from_str(&text).expect("json"));
            }
            Some(Ok(Message::Close(frame))) => {
                return Frame::Closed(frame.map_or(1005, |f| u16::from(f.code)));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Frame::Closed(1006),
        }
    }
}

async fn json(socket: &mut Socket) -> Value {
    match next(socket).await {
        Frame::Json(value) => value,
        Frame::Closed(code) => panic!("closed with {code}"),
    }
}

async fn closed(socket: &mut Socket) -> u16 {
    loop {
        if let Frame::Closed(code) = next(socket).await {
            return code;
        }
    }
}

async fn send(socket: &mut Socket, value: &Value) -> bool {
    socket.send(Message::text(value.to_string())).await.is_ok()
}

async fn subscribe(socket: &mut Socket, channel: &str) -> Value {
    assert!(send(socket, &json!({"type": "subscribe", "channel": channel})).await);
    json(socket).await
}

#[tokio::test]
async fn events_the_app_publishes_reach_their_tenant_only() {
    let app = app(Limits::default()).await;
    let tenant = TenantId::new();
    let mut mine = app.connect(&caller(tenant)).await.expect("connects");
    let mut other = app
        .connect(&caller(TenantId::new()))
        .await
        .expect("connects");
    assert_eq!(subscribe(&mut mine, "tenant").await["type"], "subscribed");
    assert_eq!(subscribe(&mut other, "tenant").await["type"], "subscribed");
    // A kind the app did not register is unknown: not_found, like a hidden channel.
    let unknown = subscribe(&mut mine, "project:p1").await;
    assert_eq!(unknown["type"], "error", "{unknown}");
    assert_eq!(unknown["code"], "not_found", "{unknown}");

    let seq = app
        .realtime
        .publish(tenant, "tenant", "note.created", &json!({"title": "hi"}))
        .await
        .expect("publish");
    assert_eq!(seq, 1);
    let event = json(&mut mine).await;
    assert_eq!(event["type"], "event");
    assert_eq!(event["channel"], "tenant");
    assert_eq!(
        (event["seq"].clone(), event["event"].clone()),
        (json!(1), json!("note.created"))
    );
    assert_eq!(event["data"]["title"], "hi");
    // The other tenant heard nothing: its next frame is the answer to its ping.
    assert!(send(&mut other, &json!({"type": "ping", "id": "p"})).await);
    assert_eq!(json(&mut other).await["type"], "pong");
}

#[tokio::test]
async fn a_connection_holds_at_most_its_subscriptions() {
    let app = app(limits(|l| l.max_subscriptions = 2)).await;
    let mut socket = app
        .connect(&caller(TenantId::new()))
        .await
        .expect("connects");
    assert_eq!(subscribe(&mut socket, "tenant").await["type"], "subscribed");
    assert_eq!(subscribe(&mut socket, "note:a").await["type"], "subscribed");
    let third = subscribe(&mut socket, "note:b").await;
    assert_eq!(third["type"], "error", "{third}");
    assert_eq!(third["code"], "rate_limited", "{third}");
    assert_eq!(app.realtime.stats().subscriptions, 2);
    // Unsubscribing frees a slot.
    assert!(
        send(
            &mut socket,
            &json!({"type": "unsubscribe", "channel": "note:a"})
        )
        .await
    );
    assert_eq!(json(&mut socket).await["type"], "unsubscribed");
    assert_eq!(subscribe(&mut socket, "note:b").await["type"], "subscribed");
}

#[tokio::test]
async fn a_tenant_holds_at_most_its_connections() {
    let app = app(limits(|l| l.max_connections_per_tenant = 2)).await;
    let tenant = TenantId::new();
    let first = app.connect(&caller(tenant)).await.expect("first");
    let _second = app.connect(&caller(tenant)).await.expect("second");
    let (status, problem) = app.connect(&caller(tenant)).await.expect_err("third");
    assert_eq!(status, 429, "{problem}");
    assert_eq!(problem["code"], "rate_limited", "{problem}");
    // Another tenant is not affected.
    assert!(app.connect(&caller(TenantId::new())).await.is_ok());
    // A closed connection frees its place (once the server has seen it go).
    drop(first);
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        if app.connect(&caller(tenant)).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_flooding_client_is_refused_then_closed_with_1008() {
    let app = app(limits(|l| l.messages_per_second = 1)).await;
    let mut socket = app
        .connect(&caller(TenantId::new()))
        .await
        .expect("connects");
    // One message a second (bursts of two) against hundreds sent at once: the bucket cannot
    // refill fast enough for them, however slow the machine is (it would take minutes).
    for n in 0..300 {
        if !send(&mut socket, &json!({"type": "ping", "id": n})).await {
            break;
        }
    }
    let mut limited = 0;
    loop {
        match next(&mut socket).await {
            Frame::Json(value) if value["code"] == "rate_limited" => limited += 1,
            Frame::Json(value) => assert_eq!(value["type"], "pong", "{value}"),
            Frame::Closed(code) => {
                assert_eq!(code, 1008);
                break;
            }
        }
    }
    assert!(limited >= 1);
}

#[tokio::test]
async fn a_silent_connection_is_closed_with_4009() {
    let app = app(limits(|l| l.idle_timeout = Duration::from_millis(200))).await;
    let mut socket = app
        .connect(&caller(TenantId::new()))
        .await
        .expect("connects");
    // Nothing sent, no ping answered before the idle timeout: closed.
    assert_eq!(closed(&mut socket).await, 4009);
    drop(socket);
    // And its place is released (once the server has finished the close).
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while app.realtime.stats().connections > 0 {
        assert!(tokio::time::Instant::now() < deadline, "never released");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Expiry by the tokens' clock, moved by the test: nothing here waits for real time to pass.
#[tokio::test]
async fn an_expired_token_closes_with_4001_unless_a_fresh_one_was_sent() {
    let clock = Arc::new(ManualClock::starting_now());
    let app = app_on(Limits::default(), clock.clone()).await;
    let ttl = app.tokens.config().ttl;
    // Past a token's expiry by more than the verifier's leeway for clock skew.
    let beyond = ttl + app.tokens.config().leeway + Duration::from_secs(1);
    let step = |by: Duration| clock.advance(by);
    let who = caller(TenantId::new());
    let ping = |id: &str| json!({"type": "ping", "id": id});

    // Open until its token's expiry, closed with 4001 at the first message after it.
    let mut socket = app.connect(&who).await.expect("connects");
    assert!(send(&mut socket, &ping("before")).await);
    assert_eq!(json(&mut socket).await["type"], "pong");
    step(ttl + Duration::from_secs(1));
    assert!(send(&mut socket, &ping("after")).await);
    assert_eq!(closed(&mut socket).await, 4001);
    assert_eq!(
        app.realtime.stats().disconnects.get(&4001).copied(),
        Some(1)
    );

    // A token that has already expired is refused at the handshake.
    let stale = app.tokens.issue(&who).expect("token").token;
    step(beyond);
    let (status, problem) = app.connect_with(&stale).await.expect_err("refused");
    assert_eq!(
        (status, problem["code"].as_str()),
        (401, Some("token_expired"))
    );

    // A fresh token of the same session sent over the socket moves the expiry.
    let mut socket = app.connect(&who).await.expect("connects");
    step(ttl / 2);
    let fresh = app.tokens.issue(&who).expect("token").token;
    assert!(
        send(
            &mut socket,
            &json!({"type": "auth", "token": fresh, "id": 1})
        )
        .await
    );
    let answer = json(&mut socket).await;
    assert_eq!(answer["type"], "authenticated", "{answer}");
    // Whole seconds from a clock with microseconds to an `exp` in whole seconds.
    let expires_in = answer["expires_in"].as_u64().expect("expires_in");
    assert!(
        (ttl.as_secs() - 1..=ttl.as_secs()).contains(&expires_in),
        "{answer}"
    );
    // Past the first token's expiry, within the fresh one's: still open.
    step(ttl / 2 + Duration::from_secs(1));
    assert!(send(&mut socket, &ping("still")).await);
    assert_eq!(json(&mut socket).await["type"], "pong");
    // Past the fresh one's too.
    step(ttl / 2);
    assert!(send(&mut socket, &ping("gone")).await);
    assert_eq!(closed(&mut socket).await, 4001);

    // An expired token sent as the fresh one is an error, and the connection stays as it was.
    let mut socket = app.connect(&who).await.expect("connects");
    let expired = app.tokens.issue(&who).expect("token").token;
    step(beyond);
    let mut socket_b = app.connect(&who).await.expect("connects");
    assert!(
        send(
            &mut socket_b,
            &json!({"type": "auth", "token": expired, "id": 2})
        )
        .await
    );
    let answer = json(&mut socket_b).await;
    assert_eq!(
        (answer["type"].as_str(), answer["code"].as_str()),
        (Some("error"), Some("bad_request")),
        "{answer}"
    );
    assert!(send(&mut socket_b, &ping("b")).await);
    assert_eq!(json(&mut socket_b).await["type"], "pong");
    // The first of these two, opened before the step, expired with it.
    assert!(send(&mut socket, &ping("a")).await);
    assert_eq!(closed(&mut socket).await, 4001);
}
