//! tenantkit-realtime mounted in plain hyper: events published by the application reach the
//! subscribers of their tenant, and the limits hold (subscription cap, per-tenant connection
//! cap, message rate, idle timeout). Every wait is a hang guard; nothing asserts a duration.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use hyper_auth::serve;
use serde_json::{Value, json};
use tenantkit_auth::{AccessTokens, JwtConfig, KeySet, SigningKey};
use tenantkit_core::{Principal, Role, SessionId, TenantId, UserId};
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
    let tokens = AccessTokens::new(
        KeySet::new(SigningKey::generate_ed25519().expect("key")),
        JwtConfig::new("i", "a"),
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
