//! The Redis backplane (feature `redis`): sequence numbers and history in Redis, events to
//! every instance by pub/sub.
//!
//! Per channel, two keys: `<prefix>:seq:<tenant>:<name>` (the counter) and
//! `<prefix>:log:<tenant>:<name>` (a stream holding the channel's recent events, trimmed to
//! [`HistoryLimits::max_events`] and [`HistoryLimits::max_age`]). A publish is one Lua script:
//! it looks for the outbox origin among the recent entries (a republished message keeps its
//! seq), increments the counter, appends to the stream, trims it, and `PUBLISH`es the event on
//! `<prefix>:events`. Redis runs scripts one at a time, so every instance hears a channel's
//! events in `seq` order.
//!
//! Each instance holds one pub/sub connection (dedicated: it only listens, with no response
//! timeout on its reads) and pings it to notice a half-open socket. When it is lost, the
//! instance reconnects with backoff, subscribes again and reports the gap
//! ([`Backplane::gaps`]): what was published meanwhile never reached it, so its clients
//! reconnect and resume from the streams. Commands (publish, replay) use a
//! [`ConnectionManager`], which reconnects by itself.
//!
//! [`RedisBackplane::revocation_bus`] carries tenantkit-auth's revocations over the same
//! pub/sub connection (`<prefix>:revocations`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tenantkit_auth::RevocationBus;
use tenantkit_core::TenantId;
use tokio::sync::{broadcast, watch};

use crate::tasks::Tasks;

use super::bus::{CrossBus, Held, forward};
use super::{Backplane, Event, HistoryLimits, Publish, Replay, replay_from};
use crate::channel::{BoxFuture, ChannelKey};
use crate::{Error, Result};

/// How long a channel's counter outlives its last event (so a resume after a quiet hour is
/// still answered truthfully: `recovered: false`, not a reset to seq 1 that looks recovered).
const SEQ_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often the listening connection is pinged, and how long a ping may take.
const PING_EVERY: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// The publish script. KEYS: seq, log, events channel. ARGV: origin ('' for none), max
/// events, max age (ms), counter ttl (ms), the event's JSON up to its seq (`...,"s":`).
const PUBLISH: &str = r"
local origin = ARGV[1]
if origin ~= '' then
  local recent = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[2])
  for _, entry in ipairs(recent) do
    local f = entry[2]
    local seq, o = nil, nil
    for i = 1, #f, 2 do
      if f[i] == 's' then seq = f[i + 1] elseif f[i] == 'o' then o = f[i + 1] end
    end
    if o == origin then return tonumber(seq) end
  end
end
local seq = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local payload = ARGV[5] .. seq .. '}'
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], '*', 's', seq, 'o', origin, 'p', payload)
local now = redis.call('TIME')
local oldest = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[3])
if oldest > 0 then redis.call('XTRIM', KEYS[2], 'MINID', oldest) end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', KEYS[3], payload)
return seq
";

/// The replay script. KEYS: seq, log. ARGV: max age (ms). Answers the counter and the
/// payloads of the entries younger than max age.
const REPLAY: &str = r"
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local now = redis.call('TIME')
local oldest = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[1])
if oldest < 0 then oldest = 0 end
local entries = redis.call('XRANGE', KEYS[2], oldest, '+')
local out = { seq }
for _, entry in ipairs(entries) do
  local f = entry[2]
  for i = 1, #f, 2 do
    if f[i] == 'p' then out[#out + 1] = f[i + 1] end
  end
end
return out
";

/// An event as it travels through Redis.
#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    t: TenantId,
    c: &'a str,
    e: &'a str,
    a: bool,
    o: Option<i64>,
    #[serde(borrow)]
    d: &'a RawValue,
    s: u64,
}

/// The event's JSON without its seq, ending in `"s":` (the script appends the seq and `}`).
fn payload_head(message: &Publish) -> Result<String> {
    #[derive(Serialize)]
    struct Head<'a> {
        t: TenantId,
        c: &'a str,
        e: &'a str,
        a: bool,
        o: Option<i64>,
        d: &'a RawValue,
    }
    let mut json = serde_json::to_string(&Head {
        t: message.channel.tenant,
        c: &message.channel.name,
        e: &message.event,
        a: message.access_changed,
        o: message.origin,
        d: &message.data,
    })
    .map_err(|e| Error::InvalidEvent(e.to_string()))?;
    json.pop(); // the closing brace
    json.push_str(",\"s\":");
    Ok(json)
}

fn decode(payload: &[u8]) -> Option<Event> {
    let wire: Wire<'_> = serde_json::from_slice(payload).ok()?;
    let channel = ChannelKey::new(wire.t, wire.c).ok()?;
    let message = Publish {
        channel,
        event: wire.e.to_owned(),
        data: wire.d.to_owned(),
        access_changed: wire.a,
        origin: wire.o,
    };
    Some(Event::new(message, wire.s))
}

fn backplane_error(err: &redis::RedisError) -> Error {
    Error::Backplane(format!("redis: {err}"))
}

/// The Redis [`Backplane`]. Cheap to clone; the listening task stops when the last clone is
/// dropped.
#[derive(Clone)]
pub struct RedisBackplane {
    inner: Arc<Inner>,
}

struct Inner {
    commands: ConnectionManager,
    prefix: String,
    events_channel: String,
    limits: HistoryLimits,
    events: broadcast::Sender<Arc<Event>>,
    bus: Arc<CrossBus>,
    gaps: watch::Receiver<u64>,
    publish: redis::Script,
    replay: redis::Script,
    _tasks: Tasks,
}

impl fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("prefix", &self.inner.prefix)
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl RedisBackplane {
    /// The default key prefix.
    pub const PREFIX: &'static str = "tenantkit:rt";

    /// Connects to `url` (`redis://127.0.0.1:6379/0`), keeping `limits` of history under the
    /// default prefix. Returns once this instance listens, so nothing published after it
    /// returns is missed.
    ///
    /// # Errors
    /// [`Error::Backplane`] when Redis cannot be reached.
    pub async fn connect(url: &str, limits: HistoryLimits) -> Result<Self> {
        Self::connect_with_prefix(url, limits, Self::PREFIX).await
    }

    /// [`RedisBackplane::connect`] with a key prefix of its own (several deployments, or
    /// tests, sharing one Redis).
    ///
    /// # Errors
    /// [`Error::Backplane`] when Redis cannot be reached.
    pub async fn connect_with_prefix(
        url: &str,
        limits: HistoryLimits,
        prefix: &str,
    ) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|e| backplane_error(&e))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        let commands = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| backplane_error(&e))?;
        let events_channel = format!("{prefix}:events");
        let revocations_channel = format!("{prefix}:revocations");
        let (events, _) = broadcast::channel(super::memory::MemoryBackplane::CAPACITY);
        // Redis messages can be large; a revocation is small (see CrossBus for the bound).
        let (bus, queue) = CrossBus::new(64 * 1024);
        let (gap_tx, gaps) = watch::channel(0);

        let listener = Listener {
            client,
            events_channel: events_channel.clone(),
            revocations_channel: revocations_channel.clone(),
            events: events.clone(),
            bus: bus.clone(),
            gaps: gap_tx,
        };
        // The first subscription is made here, so a failure is the caller's error.
        let first = listener.subscribe().await?;
        let listen = tokio::spawn(listener.run(first));

        let sender = commands.clone();
        let send = tokio::spawn(forward(queue, move |payload| {
            let (mut sender, channel) = (sender.clone(), revocations_channel.clone());
            async move {
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload)
                    .query_async::<i64>(&mut sender)
                    .await
                    .map(drop)
            }
        }));
        Ok(Self {
            inner: Arc::new(Inner {
                commands,
                prefix: prefix.to_owned(),
                events_channel,
                limits,
                events,
                bus,
                gaps,
                publish: redis::Script::new(PUBLISH),
                replay: redis::Script::new(REPLAY),
                _tasks: Tasks::new(vec![listen, send]),
            }),
        })
    }

    /// A [`RevocationBus`] over this backplane's Redis: a revocation published on any
    /// instance reaches every instance's subscribers (and this instance's at once, even when
    /// Redis is down). After the listening connection was lost, subscribers get a
    /// [`tenantkit_auth::Revocation::missed`] notice.
    pub fn revocation_bus(&self) -> Arc<dyn RevocationBus> {
        Arc::new(Held {
            bus: self.inner.bus.clone(),
            backplane: self.clone(),
        })
    }

    fn keys(&self, channel: &ChannelKey) -> (String, String) {
        let prefix = &self.inner.prefix;
        (
            format!("{prefix}:seq:{}:{}", channel.tenant, channel.name),
            format!("{prefix}:log:{}:{}", channel.tenant, channel.name),
        )
    }

    fn max_age_ms(&self) -> u64 {
        u64::try_from(self.inner.limits.max_age.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

impl Backplane for RedisBackplane {
    fn publish(&self, message: Publish) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            let head = payload_head(&message)?;
            let (seq_key, log_key) = self.keys(&message.channel);
            let origin = message.origin.map(|o| o.to_string()).unwrap_or_default();
            let max_age = self.max_age_ms();
            let seq_ttl = u64::try_from(SEQ_TTL.as_millis())
                .unwrap_or(u64::MAX)
                .max(max_age);
            let mut commands = self.inner.commands.clone();
            self.inner
                .publish
                .key(seq_key)
                .key(log_key)
                .key(&self.inner.events_channel)
                .arg(origin)
                .arg(self.inner.limits.max_events.max(1))
                .arg(max_age)
                .arg(seq_ttl)
                .arg(head)
                .invoke_async::<u64>(&mut commands)
                .await
                .map_err(|e| backplane_error(&e))
        })
    }

    fn replay<'a>(
        &'a self,
        channel: &'a ChannelKey,
        since: Option<u64>,
    ) -> BoxFuture<'a, Result<Replay>> {
        Box::pin(async move {
            let (seq_key, log_key) = self.keys(channel);
            let mut commands = self.inner.commands.clone();
            let answer: Vec<redis::Value> = self
                .inner
                .replay
                .key(seq_key)
                .key(log_key)
                .arg(self.max_age_ms())
                .invoke_async(&mut commands)
                .await
                .map_err(|e| backplane_error(&e))?;
            let mut answer = answer.into_iter();
            let seq = match answer.next() {
                Some(redis::Value::Int(seq)) => u64::try_from(seq).unwrap_or(0),
                _ => 0,
            };
            if since.is_none() {
                return Ok(replay_from(std::iter::empty(), seq, None));
            }
            let events = answer.filter_map(|value| match value {
                redis::Value::BulkString(bytes) => decode(&bytes).map(Arc::new),
                _ => None,
            });
            Ok(replay_from(events, seq, since))
        })
    }

    fn events(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.events.subscribe()
    }

    fn gaps(&self) -> Option<watch::Receiver<u64>> {
        Some(self.inner.gaps.clone())
    }
}

/// The listening side: one pub/sub connection, re-made after it is lost.
struct Listener {
    client: redis::Client,
    events_channel: String,
    revocations_channel: String,
    events: broadcast::Sender<Arc<Event>>,
    bus: Arc<CrossBus>,
    gaps: watch::Sender<u64>,
}

impl Listener {
    async fn subscribe(&self) -> Result<redis::aio::PubSub> {
        let mut pubsub = self
            .client
            .get_async_pubsub()
            .await
            .map_err(|e| backplane_error(&e))?;
        pubsub
            .subscribe(&[&self.events_channel, &self.revocations_channel])
            .await
            .map_err(|e| backplane_error(&e))?;
        Ok(pubsub)
    }

    async fn run(self, first: redis::aio::PubSub) {
        let mut pubsub = Some(first);
        let mut backoff = Duration::from_millis(50);
        loop {
            let current = match pubsub.take() {
                Some(current) => current,
                None => match self.subscribe().await {
                    Ok(current) => {
                        // Subscribed again: whatever was published meanwhile is lost here.
                        tracing::warn!("realtime: redis listener reconnected; reporting the gap");
                        backoff = Duration::from_millis(50);
                        self.gaps.send_modify(|n| *n += 1);
                        self.bus.missed();
                        current
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "realtime: redis listener cannot reconnect");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            self.listen(current).await;
            tracing::warn!("realtime: lost the redis listening connection");
        }
    }

    /// Hands every message to the local subscribers until the connection is lost.
    async fn listen(&self, pubsub: redis::aio::PubSub) {
        let (mut sink, mut stream) = pubsub.split();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else { return };
                    self.dispatch(&message);
                }
                _ = ping.tick() => {
                    // In subscribed mode PING answers ["pong", ""].
                    let pong =
                        tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        return;
                    }
                }
            }
        }
    }

    fn dispatch(&self, message: &redis::Msg) {
        let payload = message.get_payload_bytes();
        if message.get_channel_name() == self.events_channel {
            match decode(payload) {
                // No subscriber yet is not an error.
                Some(event) => drop(self.events.send(Arc::new(event))),
                None => tracing::warn!("realtime: an undecodable event on the redis backplane"),
            }
        } else if message.get_channel_name() == self.revocations_channel {
            self.bus.received(payload);
        }
    }
}
