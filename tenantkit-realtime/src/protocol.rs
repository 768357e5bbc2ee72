//! Protocol v1: the JSON text frames a client and the server exchange, the error codes and the
//! close codes. The contract is `../shared/DESIGN.md`, "Realtime protocol"; the AsyncAPI 3
//! document [`ASYNCAPI`] describes it for client generators.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The WebSocket subprotocol of this version. A client that offers subprotocols must offer
/// this one; a client that offers none speaks v1.
pub const SUBPROTOCOL: &str = "tenantkit.v1";

/// The AsyncAPI 3 description of protocol v1 (YAML).
pub const ASYNCAPI: &str = include_str!("../asyncapi.yaml");

/// Close codes the server uses (RFC 6455 codes and the protocol's own 4xxx).
pub mod close {
    /// The server is shutting down (reconnect elsewhere).
    pub const GOING_AWAY: u16 = 1001;
    /// A refusal not covered by another code (a message that is not protocol v1, a client
    /// that keeps exceeding its message rate, a token of another session).
    pub const POLICY: u16 = 1008;
    /// A message or frame larger than the limits.
    pub const TOO_BIG: u16 = 1009;
    /// The server lost events it should have delivered (reconnect and resume with `since`).
    pub const TRY_AGAIN: u16 = 1013;
    /// The connection's access token expired and no fresh one was sent (`{"type":"auth"}`).
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// The connection's session was revoked (logout, password change, removal ...).
    pub const SESSION_REVOKED: u16 = 4002;
    /// The client did not read its events fast enough; its queue overflowed.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// Nothing was heard from the client (not even a pong) within the idle timeout.
    pub const IDLE: u16 = 4009;
}

/// The stable codes of `{"type":"error"}` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No such channel, or not one the caller may see (indistinguishable on purpose).
    NotFound,
    /// The caller lost access to a channel it was subscribed to; the subscription ended.
    Forbidden,
    /// A frame that is not a valid protocol v1 message, or an invalid channel name.
    BadRequest,
    /// Too many messages, or more subscriptions than the connection may hold.
    RateLimited,
    /// The server could not answer now (a backplane or database failure); retry.
    Unavailable,
}

/// A frame from the client.
#[derive(Debug)]
pub(crate) enum ClientMessage {
    Subscribe {
        channel: String,
        since: Option<u64>,
        id: Option<Box<RawValue>>,
    },
    Unsubscribe {
        channel: String,
        id: Option<Box<RawValue>>,
    },
    Ping {
        id: Option<Box<RawValue>>,
    },
    Auth {
        token: String,
        id: Option<Box<RawValue>>,
    },
}

/// The flat shape every client frame is read as first (serde cannot keep a raw `id` inside an
/// internally tagged enum).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Flat {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    since: Option<u64>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    id: Option<Box<RawValue>>,
}

impl ClientMessage {
    /// Parses a text frame; `None` for anything that is not a protocol v1 message.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let flat: Flat = serde_json::from_str(text).ok()?;
        let Flat {
            kind,
            channel,
            since,
            token,
            id,
        } = flat;
        match (kind.as_str(), channel, since, token) {
            ("subscribe", Some(channel), since, None) => {
                Some(Self::Subscribe { channel, since, id })
            }
            ("unsubscribe", Some(channel), None, None) => Some(Self::Unsubscribe { channel, id }),
            ("ping", None, None, None) => Some(Self::Ping { id }),
            ("auth", None, None, Some(token)) => Some(Self::Auth { token, id }),
            _ => None,
        }
    }
}

/// A frame from the server (events are serialised once per event, see `Event`).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ServerMessage<'a> {
    Subscribed {
        channel: &'a str,
        seq: u64,
        recovered: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
    },
    Unsubscribed {
        channel: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
    },
    Authenticated {
        expires_in: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
    },
}

impl ServerMessage<'_> {
    pub(crate) fn to_text(&self) -> String {
        // Serialising these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The text of an `event` frame: built once per event and shared by every subscriber.
pub(crate) fn event_frame(channel: &str, seq: u64, event: &str, data: &RawValue) -> String {
    #[derive(Serialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        channel: &'a str,
        seq: u64,
        event: &'a str,
        data: &'a RawValue,
    }
    serde_json::to_string(&Frame {
        kind: "event",
        channel,
        seq,
        event,
        data,
    })
    .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_parse_strictly() {
        let ok =
            ClientMessage::parse(r#"{"type":"subscribe","channel":"tenant","since":4,"id":"x"}"#)
                .unwrap();
        assert!(matches!(
            ok,
            ClientMessage::Subscribe {
                since: Some(4),
                id: Some(_),
                ..
            }
        ));
        for bad in [
            r#"{"type":"subscribe"}"#,
            r#"{"type":"subscribe","channel":"tenant","since":-1}"#,
            r#"{"type":"subscribe","channel":"tenant","extra":1}"#,
            r#"{"type":"shout"}"#,
            r#"{"type":"ping","channel":"tenant"}"#,
            r#"[]"#,
            "not json",
        ] {
            assert!(ClientMessage::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn an_event_frame_is_protocol_json() {
        let data = RawValue::from_string(r#"{"title":"a \"quoted\" title"}"#.into()).unwrap();
        let text = event_frame("project:1", 3, "task.created", &data);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["type"], "event");
        assert_eq!(value["seq"], 3);
        assert_eq!(value["data"]["title"], "a \"quoted\" title");
    }
}
