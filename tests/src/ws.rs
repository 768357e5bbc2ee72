//! A WebSocket client for the realtime tests: connects to the test server's `/v1/realtime`,
//! sends and receives protocol v1 frames, and reads close codes. Every wait is a hang guard
//! (30 s), never a timing assertion.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tenantkit_core::Principal;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::TestServer;

/// How long any single wait may take before the test fails as hung.
pub const HANG_GUARD: Duration = Duration::from_secs(30);

/// A connected client.
#[derive(Debug)]
pub struct Ws {
    /// The socket.
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// A refused handshake: the status and the problem body.
#[derive(Debug)]
pub struct Refused {
    /// The HTTP status.
    pub status: u16,
    /// The problem+json body (`Null` when empty).
    pub body: Value,
}

/// How a frame ended up: a JSON message, or the close code.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// A text frame, parsed.
    Json(Value),
    /// The server closed with this code (1006: the socket ended without a close frame).
    Closed(u16),
}

impl TestServer {
    /// `ws://…/v1/realtime` with `query` (`""` or `ticket=…`).
    pub fn ws_url(&self, query: &str) -> String {
        let base = self.base_url.replacen("http://", "ws://", 1);
        if query.is_empty() {
            format!("{base}/v1/realtime")
        } else {
            format!("{base}/v1/realtime?{query}")
        }
    }

    /// Connects with `query` and extra `headers`.
    ///
    /// # Errors
    /// The refusal, when the server does not upgrade.
    ///
    /// # Panics
    /// When the connection fails otherwise.
    pub async fn ws_connect(&self, query: &str, headers: &[(&str, &str)]) -> Result<Ws, Refused> {
        let mut request = self.ws_url(query).into_client_request().expect("a request");
        for (name, value) in headers {
            request
                .headers_mut()
                .insert(http_name(name), value.parse().expect("a header value"));
        }
        let config = WebSocketConfig::default().max_message_size(Some(64 << 20));
        let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
        match tokio::time::timeout(HANG_GUARD, connect)
            .await
            .expect("connect hung")
        {
            Ok((stream, _)) => Ok(Ws { stream }),
            Err(WsError::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                Err(Refused { status, body })
            }
            Err(err) => panic!("connecting failed: {err}"),
        }
    }

    /// Connects as `principal` with a fresh bearer token.
    ///
    /// # Panics
    /// When the server refuses.
    pub async fn ws(&self, principal: &Principal) -> Ws {
        let token = self.tokens.issue(principal).expect("a token").token;
        let bearer = format!("Bearer {token}");
        self.ws_connect("", &[("authorization", &bearer)])
            .await
            .unwrap_or_else(|refused| panic!("refused: {refused:?}"))
    }

    /// A ticket for `principal`, over HTTP.
    ///
    /// # Panics
    /// When the server does not issue one.
    pub async fn ticket(&self, principal: &Principal) -> String {
        let reply = self
            .call(
                Some(principal),
                reqwest::Method::POST,
                "/v1/realtime/ticket",
                None,
            )
            .await;
        assert_eq!(
            reply.status,
            reqwest::StatusCode::CREATED,
            "{:?}",
            reply.body
        );
        assert_eq!(reply.body["expires_in"], 30);
        reply.body["ticket"].as_str().expect("a ticket").to_owned()
    }
}

fn http_name(name: &str) -> tokio_tungstenite::tungstenite::http::HeaderName {
    name.parse().expect("a header name")
}

impl Ws {
    /// Sends `value` as a text frame.
    ///
    /// # Panics
    /// When the socket is gone.
    pub async fn send(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    /// Sends raw text.
    ///
    /// # Panics
    /// When the socket is gone.
    pub async fn send_text(&mut self, text: String) {
        tokio::time::timeout(HANG_GUARD, self.stream.send(Message::text(text)))
            .await
            .expect("send hung")
            .expect("send");
    }

    /// The next JSON frame or the close code (pings are answered and skipped).
    ///
    /// # Panics
    /// On a hang or a frame that is not JSON.
    pub async fn next(&mut self) -> Frame {
        // One deadline for the whole wait: the server's pings (every 25 s) must not renew it.
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("no frame within the hang guard");
            match next {
                Some(Ok(Message::Text(text))) => {
                    return Frame::Json(serde_json::from_str(&text).expect("JSON"));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Frame::Closed(frame.map_or(1005, |f| u16::from(f.code)));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Frame::Closed(1006),
            }
        }
    }

    /// The next JSON frame.
    ///
    /// # Panics
    /// When the connection closes instead.
    pub async fn json(&mut self) -> Value {
        match self.next().await {
            Frame::Json(value) => value,
            Frame::Closed(code) => panic!("closed with {code}"),
        }
    }

    /// Reads until the server closes; the close code (events before it are skipped).
    ///
    /// # Panics
    /// On a hang.
    pub async fn closed(&mut self) -> u16 {
        loop {
            if let Frame::Closed(code) = self.next().await {
                return code;
            }
        }
    }

    /// Subscribes to `channel` (resuming after `since`): the server's answer.
    pub async fn subscribe(&mut self, channel: &str, since: Option<u64>) -> Value {
        let mut message = json!({ "type": "subscribe", "channel": channel, "id": channel });
        if let Some(since) = since {
            message["since"] = json!(since);
        }
        self.send(message).await;
        self.json().await
    }

    /// The next `event` frame, skipping nothing else: anything else fails.
    ///
    /// # Panics
    /// When the next frame is not an event.
    pub async fn event(&mut self) -> Value {
        let value = self.json().await;
        assert_eq!(value["type"], "event", "{value}");
        value
    }

    /// Pings and returns what arrived before the pong (events queued before it).
    pub async fn until_pong(&mut self) -> Vec<Value> {
        self.send(json!({ "type": "ping", "id": "probe" })).await;
        let mut before = Vec::new();
        loop {
            let value = self.json().await;
            if value["type"] == "pong" && value["id"] == "probe" {
                return before;
            }
            before.push(value);
        }
    }
}
