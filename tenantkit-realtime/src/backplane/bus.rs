//! The revocation bus of the networked backplanes ([`super::RedisBackplane`],
//! [`super::PgBackplane`]): each carries tenantkit-auth's revocations between instances over
//! its own transport (Redis pub/sub, PostgreSQL `NOTIFY`); what they share is here.
//!
//! A published revocation goes to this instance's subscribers at once (also when the
//! transport is down) and into a queue the backplane sends from a task of its own, tagged
//! with this instance's id so the copy that comes back is not handed out twice. A message
//! from another instance is handed to the local subscribers. After the backplane's listening
//! connection was lost, the local subscribers get [`Revocation::missed`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tenantkit_auth::{Revocation, RevocationBus};
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

/// A revocation as it travels between instances.
#[derive(Serialize, Deserialize)]
struct Wire {
    /// The publishing instance.
    i: Uuid,
    r: Revocation,
}

/// The shared half of a networked backplane's [`RevocationBus`].
#[derive(Debug)]
pub(crate) struct CrossBus {
    instance: Uuid,
    local: broadcast::Sender<Arc<Revocation>>,
    outgoing: mpsc::UnboundedSender<String>,
    max_payload: usize,
}

impl CrossBus {
    /// A bus whose messages are at most `max_payload` bytes (a larger one is sent without its
    /// session list: its scope covers them); the queue the backplane sends from.
    pub(crate) fn new(max_payload: usize) -> (Arc<Self>, mpsc::UnboundedReceiver<String>) {
        let (outgoing, queue) = mpsc::unbounded_channel();
        let bus = Arc::new(Self {
            instance: Uuid::now_v7(),
            local: broadcast::channel(tenantkit_auth::LocalRevocationBus::CAPACITY).0,
            outgoing,
            max_payload,
        });
        (bus, queue)
    }

    /// A message the transport delivered: handed to the local subscribers unless this
    /// instance sent it.
    pub(crate) fn received(&self, payload: &[u8]) {
        match serde_json::from_slice::<Wire>(payload) {
            Ok(wire) if wire.i == self.instance => {}
            // No subscriber is not an error.
            Ok(wire) => drop(self.local.send(Arc::new(wire.r))),
            Err(_) => tracing::warn!("realtime: an undecodable revocation on the backplane"),
        }
    }

    /// The listening connection was lost and re-made: messages may have been missed.
    pub(crate) fn missed(&self) {
        let _ = self
            .local
            .send(Arc::new(Revocation::missed(tenantkit_core::now())));
    }
}

impl RevocationBus for CrossBus {
    fn publish(&self, revocation: Revocation) {
        let mut wire = Wire {
            i: self.instance,
            r: revocation.clone(),
        };
        let mut payload = serde_json::to_string(&wire);
        if payload.as_ref().is_ok_and(|p| p.len() > self.max_payload) {
            // Too many sessions listed for one message: the scope alone covers them.
            wire.r.sessions.clear();
            payload = serde_json::to_string(&wire);
        }
        match payload {
            Ok(payload) => drop(self.outgoing.send(payload)),
            Err(err) => tracing::warn!(error = %err, "realtime: a revocation does not serialise"),
        }
        let _ = self.local.send(Arc::new(revocation));
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Revocation>> {
        self.local.subscribe()
    }
}

/// A [`CrossBus`] handed out with the backplane it travels on, which it keeps running (the
/// backplane's listening and sending tasks stop when its last handle is dropped).
pub(crate) struct Held<B> {
    pub(crate) bus: Arc<CrossBus>,
    /// Held only to keep the backplane alive.
    #[allow(dead_code)]
    pub(crate) backplane: B,
}

impl<B> fmt::Debug for Held<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.bus.fmt(f)
    }
}

impl<B: Send + Sync + 'static> RevocationBus for Held<B> {
    fn publish(&self, revocation: Revocation) {
        self.bus.publish(revocation);
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Revocation>> {
        self.bus.subscribe()
    }
}

/// Sends the queued payloads with `send`, in order; a payload that fails three times is
/// dropped (delivery is best effort: the session caches' TTL bounds a lost revocation, and
/// the database stays the truth).
pub(crate) async fn forward<F, Fut, E>(mut queue: mpsc::UnboundedReceiver<String>, mut send: F)
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: fmt::Display,
{
    while let Some(payload) = queue.recv().await {
        for attempt in 0..3u32 {
            match send(payload.clone()).await {
                Ok(()) => break,
                Err(err) if attempt == 2 => {
                    tracing::warn!(error = %err, "realtime: a revocation was not sent");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100 << attempt)).await,
            }
        }
    }
}
