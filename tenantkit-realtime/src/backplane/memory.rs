//! The in-process backplane: one instance, history in memory.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::{Backplane, Event, Publish, Replay, replay_from};
use crate::Result;
use crate::channel::{BoxFuture, ChannelKey};

/// How much history a backplane keeps per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Most events kept per channel (default 100).
    pub max_events: usize,
    /// Oldest event kept (default 5 minutes).
    pub max_age: Duration,
    /// Most channels tracked in memory (default 100,000); beyond it the least recently
    /// published channel is forgotten (a resume on it then answers `recovered: false`).
    pub max_channels: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self {
            max_events: 100,
            max_age: Duration::from_secs(300),
            max_channels: 100_000,
        }
    }
}

#[derive(Debug)]
struct Log {
    seq: u64,
    events: VecDeque<(Instant, Arc<Event>)>,
    last_used: Instant,
}

impl Log {
    fn trim(&mut self, limits: &HistoryLimits, now: Instant) {
        while self.events.len() > limits.max_events {
            self.events.pop_front();
        }
        while self
            .events
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > limits.max_age)
        {
            self.events.pop_front();
        }
    }
}

/// The in-process [`Backplane`] (the default): sequence numbers and history in memory, events
/// to this process only. History is lost when the process stops; a client resuming after a
/// restart is told `recovered: false`.
#[derive(Debug, Clone)]
pub struct MemoryBackplane {
    logs: Arc<Mutex<HashMap<ChannelKey, Log>>>,
    sender: broadcast::Sender<Arc<Event>>,
    limits: HistoryLimits,
}

impl Default for MemoryBackplane {
    fn default() -> Self {
        Self::new(HistoryLimits::default())
    }
}

impl MemoryBackplane {
    /// Events an instance's subscriber may fall behind by before it lags.
    pub const CAPACITY: usize = 65_536;

    /// A backplane keeping `limits` of history.
    pub fn new(limits: HistoryLimits) -> Self {
        Self {
            logs: Arc::default(),
            sender: broadcast::channel(Self::CAPACITY).0,
            limits,
        }
    }

    fn publish_now(&self, message: Publish) -> u64 {
        let now = Instant::now();
        let mut logs = self
            .logs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !logs.contains_key(&message.channel) && logs.len() >= self.limits.max_channels {
            let oldest = logs
                .iter()
                .min_by_key(|(_, log)| log.last_used)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                logs.remove(&oldest);
            }
        }
        let log = logs.entry(message.channel.clone()).or_insert_with(|| Log {
            seq: 0,
            events: VecDeque::new(),
            last_used: now,
        });
        log.last_used = now;
        if let Some(origin) = message.origin
            && let Some((_, seen)) = log.events.iter().find(|(_, e)| e.origin == Some(origin))
        {
            return seen.seq;
        }
        log.seq += 1;
        let event = Arc::new(Event::new(message, log.seq));
        log.events.push_back((now, event.clone()));
        log.trim(&self.limits, now);
        // Sent under the lock, so every subscriber sees a channel's events in seq order. No
        // subscriber (no instance listening yet) is not an error.
        let _ = self.sender.send(event);
        log.seq
    }
}

impl Backplane for MemoryBackplane {
    fn publish(&self, message: Publish) -> BoxFuture<'_, Result<u64>> {
        let seq = self.publish_now(message);
        Box::pin(async move { Ok(seq) })
    }

    fn replay<'a>(
        &'a self,
        channel: &'a ChannelKey,
        since: Option<u64>,
    ) -> BoxFuture<'a, Result<Replay>> {
        let now = Instant::now();
        let mut logs = self
            .logs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let replay = match logs.get_mut(channel) {
            Some(log) => {
                log.trim(&self.limits, now);
                replay_from(log.events.iter().map(|(_, e)| e.clone()), log.seq, since)
            }
            None => replay_from(std::iter::empty(), 0, since),
        };
        Box::pin(async move { Ok(replay) })
    }

    fn events(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;
    use tenantkit_core::TenantId;

    fn message(channel: &ChannelKey, n: u32, origin: Option<i64>) -> Publish {
        Publish {
            channel: channel.clone(),
            event: "thing.happened".into(),
            data: RawValue::from_string(format!("{{\"n\":{n}}}")).unwrap(),
            access_changed: false,
            origin,
        }
    }

    #[tokio::test]
    async fn seqs_are_per_channel_and_history_replays_in_order() {
        let bp = MemoryBackplane::new(HistoryLimits {
            max_events: 3,
            ..HistoryLimits::default()
        });
        let a = ChannelKey::new(TenantId::new(), "tenant").unwrap();
        let b = ChannelKey::new(TenantId::new(), "tenant").unwrap();
        let mut live = bp.events();
        for n in 1..=5 {
            assert_eq!(
                bp.publish(message(&a, n, None)).await.unwrap(),
                u64::from(n)
            );
        }
        assert_eq!(bp.publish(message(&b, 1, None)).await.unwrap(), 1);
        for n in 1..=5 {
            assert_eq!(live.recv().await.unwrap().seq, n);
        }
        let r = bp.replay(&a, Some(2)).await.unwrap();
        assert!(r.recovered);
        assert_eq!(
            r.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        // History holds 3..=5: seq 2 is gone.
        let r = bp.replay(&a, Some(1)).await.unwrap();
        assert!(!r.recovered && r.events.is_empty());
        assert_eq!(r.seq, 5);
        // Up to date; and a since beyond the channel (a reset) is not recovered.
        assert!(bp.replay(&a, Some(5)).await.unwrap().recovered);
        assert!(!bp.replay(&a, Some(9)).await.unwrap().recovered);
        let fresh = ChannelKey::new(a.tenant, "project:x").unwrap();
        let r = bp.replay(&fresh, None).await.unwrap();
        assert_eq!((r.seq, r.recovered), (0, true));
    }

    #[tokio::test]
    async fn a_republished_outbox_message_keeps_its_seq() {
        let bp = MemoryBackplane::default();
        let a = ChannelKey::new(TenantId::new(), "tenant").unwrap();
        assert_eq!(bp.publish(message(&a, 1, Some(41))).await.unwrap(), 1);
        assert_eq!(bp.publish(message(&a, 2, Some(42))).await.unwrap(), 2);
        assert_eq!(bp.publish(message(&a, 1, Some(41))).await.unwrap(), 1);
        assert_eq!(bp.replay(&a, None).await.unwrap().seq, 2);
    }

    #[tokio::test]
    async fn channels_beyond_the_bound_are_forgotten_oldest_first() {
        let bp = MemoryBackplane::new(HistoryLimits {
            max_channels: 2,
            ..HistoryLimits::default()
        });
        let t = TenantId::new();
        let keys: Vec<ChannelKey> = (0..3)
            .map(|i| ChannelKey::new(t, &format!("k:{i}")).unwrap())
            .collect();
        for k in &keys {
            bp.publish(message(k, 1, None)).await.unwrap();
        }
        assert_eq!(bp.replay(&keys[0], None).await.unwrap().seq, 0);
        assert_eq!(bp.replay(&keys[2], None).await.unwrap().seq, 1);
        assert_eq!(bp.logs.lock().unwrap().len(), 2);
    }
}
