//! Backplanes: where events get their sequence numbers, where history is kept, and how events
//! reach every instance. One trait, [`Backplane`]; [`MemoryBackplane`] (one process) is the
//! default.
//!
//! A backplane's contract:
//! - [`Backplane::publish`] gives the event the next `seq` of its channel (1, 2, 3 ... per
//!   channel, the same on every instance), keeps it in the channel's history and sends it to
//!   every instance's [`Backplane::events`] stream, in `seq` order per channel.
//! - A publish carrying an `origin` (the transactional outbox's message id) that the channel's
//!   history already holds is not published again: the existing `seq` is returned. An outbox
//!   relay that died after publishing and before marking the message delivered republishes
//!   it, and subscribers see it once.
//! - [`Backplane::replay`] answers the events after `since` that history still holds, or
//!   `recovered: false` when it no longer reaches back that far.
//! - An instance's [`Backplane::events`] subscriber that falls behind gets
//!   [`broadcast::error::RecvError::Lagged`]: it lost events, and its clients must resume.
//!   So must they after [`Backplane::gaps`] moves (a networked backplane reconnected).

#[cfg(any(feature = "redis", feature = "postgres"))]
mod bus;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::sync::{broadcast, watch};
use tokio_tungstenite::tungstenite::Utf8Bytes;

pub use memory::{HistoryLimits, MemoryBackplane};
#[cfg(feature = "postgres")]
pub use postgres::PgBackplane;
#[cfg(feature = "redis")]
pub use redis::RedisBackplane;

use crate::Result;
use crate::channel::{BoxFuture, ChannelKey};

/// An event to publish on a channel.
#[derive(Debug, Clone)]
pub struct Publish {
    /// The channel (tenant and logical name).
    pub channel: ChannelKey,
    /// The event's name (`task.created` ...).
    pub event: String,
    /// The event's data, a JSON document.
    pub data: Box<RawValue>,
    /// The event changes who may receive channels of its tenant (a member removed, a team
    /// changed): every connection of the tenant re-checks its subscriptions before it
    /// delivers anything after it.
    pub access_changed: bool,
    /// The outbox message this event comes from, for deduplication.
    pub origin: Option<i64>,
}

/// An event with its sequence number, as every instance receives it.
#[derive(Debug)]
pub struct Event {
    /// The channel.
    pub channel: ChannelKey,
    /// Its sequence number in the channel.
    pub seq: u64,
    /// Its name.
    pub event: String,
    /// Its data.
    pub data: Box<RawValue>,
    /// See [`Publish::access_changed`].
    pub access_changed: bool,
    /// See [`Publish::origin`].
    pub origin: Option<i64>,
    /// The `event` frame, serialised once for every subscriber.
    frame: Utf8Bytes,
}

impl Event {
    /// `message` as the event `seq` of its channel.
    pub fn new(message: Publish, seq: u64) -> Self {
        let frame =
            crate::protocol::event_frame(&message.channel.name, seq, &message.event, &message.data);
        Self {
            channel: message.channel,
            seq,
            event: message.event,
            data: message.data,
            access_changed: message.access_changed,
            origin: message.origin,
            frame: Utf8Bytes::from(frame),
        }
    }

    /// The text frame a subscriber receives.
    pub fn frame(&self) -> &Utf8Bytes {
        &self.frame
    }

    /// The frame's size in bytes (what a connection's queue budget counts).
    pub fn size(&self) -> usize {
        self.frame.len()
    }
}

/// What [`Backplane::replay`] answers.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// The channel's current (latest) sequence number; 0 when nothing was published.
    pub seq: u64,
    /// The events after `since`, in order (empty without `since` or when not recovered).
    pub events: Vec<Arc<Event>>,
    /// Whether `events` is everything after `since` (always true without `since`).
    pub recovered: bool,
}

/// Assigns sequence numbers, keeps history and carries events to every instance. See the
/// module documentation for the contract.
pub trait Backplane: fmt::Debug + Send + Sync + 'static {
    /// Publishes `message`: its sequence number.
    fn publish(&self, message: Publish) -> BoxFuture<'_, Result<u64>>;

    /// The channel's current sequence number and, with `since`, the events after it.
    fn replay<'a>(
        &'a self,
        channel: &'a ChannelKey,
        since: Option<u64>,
    ) -> BoxFuture<'a, Result<Replay>>;

    /// Every event published from now on, on any instance.
    fn events(&self) -> broadcast::Receiver<Arc<Event>>;

    /// A counter that moves each time this instance may have missed events of other
    /// instances (its connection to them was lost and re-made): its clients must resume. `None`
    /// (the default) for a backplane that cannot miss any.
    fn gaps(&self) -> Option<watch::Receiver<u64>> {
        None
    }
}

/// The events of `history` after `since`, given the channel's current `seq`: recovered when
/// history holds `since + 1` (or nothing was missed). Shared by the backplanes.
pub(crate) fn replay_from(
    history: impl Iterator<Item = Arc<Event>>,
    seq: u64,
    since: Option<u64>,
) -> Replay {
    let Some(since) = since else {
        return Replay {
            seq,
            events: Vec::new(),
            recovered: true,
        };
    };
    if since > seq {
        // The client saw more than the channel holds: the history was reset (an instance of
        // the in-memory backplane restarted). Refetch.
        return Replay {
            seq,
            events: Vec::new(),
            recovered: false,
        };
    }
    if since == seq {
        return Replay {
            seq,
            events: Vec::new(),
            recovered: true,
        };
    }
    let events: Vec<Arc<Event>> = history.filter(|e| e.seq > since && e.seq <= seq).collect();
    let recovered =
        events.first().is_some_and(|e| e.seq == since + 1) && events.len() as u64 == seq - since;
    if recovered {
        Replay {
            seq,
            events,
            recovered,
        }
    } else {
        Replay {
            seq,
            events: Vec::new(),
            recovered: false,
        }
    }
}
