//! One connection's task: reads client frames, writes queued events, pings, and closes on
//! expiry, revocation, overflow or idleness.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::value::RawValue;
use tenantkit_core::{Clock, Principal};
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::channel::ChannelKey;
use crate::hub::Admission;
use crate::protocol::{ClientMessage, ErrorCode, ServerMessage, close};
use crate::service::Inner;

/// One subscription of the connection.
#[derive(Debug)]
struct Sub {
    key: ChannelKey,
    /// The last seq delivered (or announced by `subscribed`): older events are duplicates.
    last_seq: u64,
    /// When access was last confirmed; `None`: check before the next delivery.
    checked: Option<Instant>,
}

/// A token bucket for the client's messages.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    rate: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second.max(1));
        Self {
            tokens: rate * 2.0,
            rate,
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate)
            .min(self.rate * 2.0);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why the loop ended: a close code to send (and record), or a dead socket.
enum End {
    Close(u16, &'static str),
    Gone(u16),
}

struct Connection<S> {
    ws: WebSocketStream<S>,
    inner: Arc<Inner>,
    admission: Admission,
    principal: Principal,
    /// When the principal's access token expires (by the tokens' clock) and the timer for it.
    expires: Option<(OffsetDateTime, Instant)>,
    subs: HashMap<Arc<str>, Sub>,
    bucket: Bucket,
    refusals: u32,
    heard: Instant,
}

/// The principal's expiry, by `clock`, and the timer instant it falls on.
fn deadline(principal: &Principal, clock: &dyn Clock) -> Option<(OffsetDateTime, Instant)> {
    let at = principal.expires_at()?;
    let left = Duration::try_from(at - clock.now()).unwrap_or(Duration::ZERO);
    Some((at, Instant::now() + left))
}

/// Serves one upgraded connection until it ends.
pub(crate) async fn run<S>(
    ws: WebSocketStream<S>,
    inner: Arc<Inner>,
    admission: Admission,
    principal: Principal,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = inner.limits;
    let mut conn = Connection {
        ws,
        expires: deadline(&principal, &**inner.tokens.clock()),
        inner,
        admission,
        principal,
        subs: HashMap::new(),
        bucket: Bucket::new(limits.messages_per_second),
        refusals: 0,
        heard: Instant::now(),
    };
    let end = conn.serve().await;
    let hub = &conn.inner.hub;
    match end {
        End::Close(code, reason) => {
            hub.record_close(code);
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: Utf8Bytes::from_static(reason),
            };
            // Best effort, bounded: a client that does not read gets no close frame. Then the
            // closing handshake: what the client sent meanwhile is read and dropped until its
            // close answer (at most 1 s), so the socket is not reset under unread data, which
            // would lose the close frame (and its code) on the client's side.
            let linger = async {
                if conn.ws.close(Some(frame)).await.is_ok() {
                    while let Some(Ok(_)) = conn.ws.next().await {}
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), linger).await;
        }
        End::Gone(code) => hub.record_close(code),
    }
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async fn serve(&mut self) -> End {
        let limits = self.inner.limits;
        let mut ping =
            tokio::time::interval_at(Instant::now() + limits.ping_every, limits.ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let conn = self.admission.conn.clone();
        loop {
            let expiry = self.expires.map(|(_, timer)| timer);
            // Silent (no message, no pong) for the idle timeout: closed, whenever that falls
            // between pings.
            let idle = self.heard + limits.idle_timeout;
            let step = tokio::select! {
                () = conn.notify.notified() => Step::Drain,
                incoming = self.ws.next() => Step::Incoming(incoming),
                _ = ping.tick() => Step::Ping,
                () = sleep_until(expiry) => Step::Expired,
                () = tokio::time::sleep_until(idle) => Step::Idle,
            };
            let outcome = match step {
                // Nothing more for an expired token by the tokens' clock either.
                Step::Drain if self.expired() => {
                    Err(End::Close(close::TOKEN_EXPIRED, "token expired"))
                }
                Step::Drain => self.drain().await,
                Step::Incoming(None) => Err(End::Gone(1006)),
                Step::Incoming(Some(Err(WsError::Capacity(CapacityError::MessageTooLong {
                    ..
                })))) => Err(End::Close(close::TOO_BIG, "message too big")),
                Step::Incoming(Some(Err(WsError::Capacity(_)))) => {
                    Err(End::Close(close::TOO_BIG, "frame too big"))
                }
                Step::Incoming(Some(Err(_))) => Err(End::Gone(1006)),
                // The timer is the usual way out; the clock is asked too before every message,
                // so an expired token never gets one more answer (and a test can move it).
                Step::Incoming(Some(Ok(_))) if self.expired() => {
                    Err(End::Close(close::TOKEN_EXPIRED, "token expired"))
                }
                Step::Incoming(Some(Ok(message))) => {
                    self.heard = Instant::now();
                    self.incoming(message).await
                }
                Step::Ping => self.write(vec![Message::Ping(bytes::Bytes::new())]).await,
                Step::Idle => Err(End::Close(close::IDLE, "idle")),
                Step::Expired => Err(End::Close(close::TOKEN_EXPIRED, "token expired")),
            };
            if let Err(end) = outcome {
                return end;
            }
        }
    }

    /// Whether the access token has expired by the tokens' clock.
    fn expired(&self) -> bool {
        self.expires
            .is_some_and(|(at, _)| at <= self.inner.tokens.clock().now())
    }

    /// Writes `messages` and flushes, within the write timeout.
    async fn write(&mut self, messages: Vec<Message>) -> Result<(), End> {
        if messages.is_empty() {
            return Ok(());
        }
        let timeout = self.inner.limits.write_timeout;
        let ws = &mut self.ws;
        let result = tokio::time::timeout(timeout, async move {
            for message in messages {
                ws.feed(message).await?;
            }
            ws.flush().await
        })
        .await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone(1006)),
            // The client does not read: nothing more can be written to it.
            Err(_) => Err(End::Gone(close::SLOW_CONSUMER)),
        }
    }

    async fn reply(&mut self, message: &ServerMessage<'_>) -> Result<(), End> {
        self.write(vec![Message::text(message.to_text())]).await
    }

    async fn error(
        &mut self,
        code: ErrorCode,
        message: &str,
        channel: Option<&str>,
        id: Option<&RawValue>,
    ) -> Result<(), End> {
        self.reply(&ServerMessage::Error {
            code,
            message,
            channel,
            id,
        })
        .await
    }

    /// Writes what the hub queued, re-checking access where it is due.
    async fn drain(&mut self) -> Result<(), End> {
        let drained = self.admission.conn.drain();
        if let Some(code) = drained.close {
            return Err(End::Close(code, reason(code)));
        }
        if drained.recheck {
            for sub in self.subs.values_mut() {
                sub.checked = None;
            }
        }
        let recheck_every = self.inner.limits.recheck_every;
        let mut out = Vec::with_capacity(drained.events.len());
        let mut lost: Vec<Arc<str>> = Vec::new();
        for event in drained.events {
            let Some(sub) = self.subs.get_mut(&*event.channel.name) else {
                continue;
            };
            if event.seq <= sub.last_seq {
                continue;
            }
            if sub.checked.is_none_or(|at| at.elapsed() > recheck_every) {
                match self
                    .inner
                    .channels
                    .authorize(&self.principal, &sub.key.name)
                    .await
                {
                    Ok(true) => sub.checked = Some(Instant::now()),
                    Ok(false) => {
                        lost.push(sub.key.name.clone());
                        self.admission.conn_unsubscribe(&self.inner.hub, &sub.key);
                        self.subs.remove(&*event.channel.name);
                        continue;
                    }
                    // The check could not run: deliver on the last answer, check again next time.
                    Err(err) => {
                        tracing::warn!(error = %err, "realtime: re-checking access failed");
                    }
                }
            }
            sub.last_seq = event.seq;
            out.push(Message::Text(event.frame().clone()));
        }
        let sent = out.len() as u64;
        for name in &lost {
            out.push(Message::text(
                ServerMessage::Error {
                    code: ErrorCode::Forbidden,
                    message: "access to the channel ended",
                    channel: Some(name),
                    id: None,
                }
                .to_text(),
            ));
        }
        self.write(out).await?;
        self.inner.hub.stats.sent.fetch_add(sent, Ordering::Relaxed);
        Ok(())
    }

    async fn incoming(&mut self, message: Message) -> Result<(), End> {
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                return self
                    .error(ErrorCode::BadRequest, "text frames only", None, None)
                    .await;
            }
            Message::Close(_) => return Err(End::Gone(1000)),
            // tungstenite answers pings itself; a pong only proves the client is alive.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Ok(()),
        };
        if !self.bucket.take() {
            self.refusals += 1;
            if self.refusals > 50 {
                return Err(End::Close(close::POLICY, "too many messages"));
            }
            return self
                .error(ErrorCode::RateLimited, "too many messages", None, None)
                .await;
        }
        let parsed = match ClientMessage::parse(&text) {
            Some(parsed) => parsed,
            None => {
                return self
                    .error(
                        ErrorCode::BadRequest,
                        "not a protocol v1 message (subscribe, unsubscribe, ping, auth)",
                        None,
                        None,
                    )
                    .await;
            }
        };
        match parsed {
            ClientMessage::Ping { id } => {
                self.reply(&ServerMessage::Pong { id: id.as_deref() }).await
            }
            ClientMessage::Subscribe { channel, since, id } => {
                self.subscribe(&channel, since, id.as_deref()).await
            }
            ClientMessage::Unsubscribe { channel, id } => {
                match self.subs.remove(channel.as_str()) {
                    Some(sub) => {
                        self.admission.conn_unsubscribe(&self.inner.hub, &sub.key);
                        self.reply(&ServerMessage::Unsubscribed {
                            channel: &channel,
                            id: id.as_deref(),
                        })
                        .await
                    }
                    None => {
                        self.error(
                            ErrorCode::NotFound,
                            "not subscribed",
                            Some(&channel),
                            id.as_deref(),
                        )
                        .await
                    }
                }
            }
            ClientMessage::Auth { token, id } => self.reauthenticate(&token, id.as_deref()).await,
        }
    }

    async fn subscribe(
        &mut self,
        name: &str,
        since: Option<u64>,
        id: Option<&RawValue>,
    ) -> Result<(), End> {
        if self.subs.contains_key(name) {
            return self
                .error(ErrorCode::BadRequest, "already subscribed", Some(name), id)
                .await;
        }
        if self.subs.len() >= self.inner.limits.max_subscriptions {
            return self
                .error(
                    ErrorCode::RateLimited,
                    "too many subscriptions",
                    Some(name),
                    id,
                )
                .await;
        }
        let Ok(key) = ChannelKey::new(self.principal.tenant_id(), name) else {
            return self
                .error(ErrorCode::BadRequest, "invalid channel name", None, id)
                .await;
        };
        match self.inner.channels.authorize(&self.principal, name).await {
            Ok(true) => {}
            Ok(false) => {
                return self
                    .error(ErrorCode::NotFound, "no such channel", Some(name), id)
                    .await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "realtime: an authorization hook failed");
                return self
                    .error(ErrorCode::Unavailable, "try again", Some(name), id)
                    .await;
            }
        }
        // Subscribed before the replay: an event published meanwhile is queued, and dropped
        // as a duplicate if the replay already carried it.
        let hub = self.inner.hub.clone();
        hub.subscribe(&self.admission.conn, &key);
        let replay = match self.inner.backplane.replay(&key, since).await {
            Ok(replay) => replay,
            Err(err) => {
                tracing::warn!(error = %err, "realtime: replay failed");
                self.admission.conn_unsubscribe(&hub, &key);
                return self
                    .error(ErrorCode::Unavailable, "try again", Some(name), id)
                    .await;
            }
        };
        if since.is_some() {
            let counter = if replay.recovered {
                &hub.stats.recovered
            } else {
                &hub.stats.not_recovered
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let mut out = Vec::with_capacity(replay.events.len() + 1);
        out.push(Message::text(
            ServerMessage::Subscribed {
                channel: name,
                seq: replay.seq,
                recovered: replay.recovered,
                id,
            }
            .to_text(),
        ));
        let last_seq = replay
            .events
            .last()
            .map_or(replay.seq, |e| e.seq.max(replay.seq));
        let replayed = replay.events.len() as u64;
        out.extend(
            replay
                .events
                .iter()
                .map(|e| Message::Text(e.frame().clone())),
        );
        self.subs.insert(
            key.name.clone(),
            Sub {
                key,
                last_seq,
                checked: Some(Instant::now()),
            },
        );
        self.write(out).await?;
        hub.stats.sent.fetch_add(replayed, Ordering::Relaxed);
        Ok(())
    }

    async fn reauthenticate(&mut self, token: &str, id: Option<&RawValue>) -> Result<(), End> {
        let Ok(fresh) = self.inner.tokens.verify(token) else {
            return self
                .error(ErrorCode::BadRequest, "invalid or expired token", None, id)
                .await;
        };
        if fresh.session_id() != self.principal.session_id()
            || fresh.user_id() != self.principal.user_id()
            || fresh.tenant_id() != self.principal.tenant_id()
        {
            return Err(End::Close(close::POLICY, "a token of another session"));
        }
        let fresh = match self.inner.live(fresh).await {
            Ok(Some(fresh)) => fresh,
            Ok(None) => return Err(End::Close(close::SESSION_REVOKED, "session revoked")),
            Err(()) => {
                return self
                    .error(ErrorCode::Unavailable, "try again", None, id)
                    .await;
            }
        };
        let clock = self.inner.tokens.clock().clone();
        self.expires = deadline(&fresh, &*clock);
        let expires_in = fresh
            .expires_at()
            .map_or(0, |at| (at - clock.now()).whole_seconds().max(0));
        self.principal = fresh;
        // The role may have changed: check every subscription before its next event.
        for sub in self.subs.values_mut() {
            sub.checked = None;
        }
        self.reply(&ServerMessage::Authenticated { expires_in, id })
            .await
    }
}

enum Step {
    Drain,
    Incoming(Option<Result<Message, WsError>>),
    Ping,
    Expired,
    Idle,
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        close::TOKEN_EXPIRED => "token expired",
        close::SESSION_REVOKED => "session revoked",
        close::SLOW_CONSUMER => "slow consumer",
        close::GOING_AWAY => "server shutting down",
        close::TRY_AGAIN => "events were lost; resume with since",
        _ => "closed",
    }
}

impl Admission {
    fn conn_unsubscribe(&self, hub: &crate::hub::Hub, key: &ChannelKey) {
        hub.unsubscribe(&self.conn, key);
    }
}
