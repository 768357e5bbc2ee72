//! The local fan-out: which connection of this instance is subscribed to which channel, each
//! connection's bounded queue, and the per-tenant connection count.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tenantkit_auth::{Revocation, RevocationScope};
use tenantkit_core::{SessionId, TenantId, UserId};
use tokio::sync::Notify;

use crate::backplane::Event;
use crate::channel::ChannelKey;
use crate::protocol::close;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a connection's task takes from its queue.
#[derive(Debug, Default)]
pub(crate) struct Drained {
    pub(crate) events: VecDeque<Arc<Event>>,
    pub(crate) close: Option<u16>,
    pub(crate) recheck: bool,
}

#[derive(Debug, Default)]
struct Queue {
    events: VecDeque<Arc<Event>>,
    bytes: usize,
    close: Option<u16>,
    recheck: bool,
}

/// One connection, as the hub sees it.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) id: u64,
    pub(crate) tenant: TenantId,
    pub(crate) user: UserId,
    pub(crate) session: SessionId,
    budget: usize,
    queue: Mutex<Queue>,
    pub(crate) notify: Notify,
    channels: Mutex<Vec<ChannelKey>>,
}

impl Conn {
    /// Queues `event`; past the byte budget the connection is closed as a slow consumer and
    /// its queue is freed.
    fn push(&self, event: &Arc<Event>, stats: &Stats) -> bool {
        let mut q = lock(&self.queue);
        if q.close.is_some() {
            return false;
        }
        if q.bytes + event.size() > self.budget {
            q.close = Some(close::SLOW_CONSUMER);
            let dropped = q.events.len() as u64 + 1;
            q.events = VecDeque::new();
            q.bytes = 0;
            drop(q);
            stats.dropped.fetch_add(dropped, Ordering::Relaxed);
            self.notify.notify_one();
            return false;
        }
        q.bytes += event.size();
        q.events.push_back(event.clone());
        drop(q);
        self.notify.notify_one();
        true
    }

    /// Asks the connection to close with `code` (the first code asked for wins).
    pub(crate) fn close(&self, code: u16) {
        let mut q = lock(&self.queue);
        if q.close.is_none() {
            q.close = Some(code);
        }
        drop(q);
        self.notify.notify_one();
    }

    fn recheck(&self) {
        lock(&self.queue).recheck = true;
        self.notify.notify_one();
    }

    /// Everything queued, the close request and whether access must be re-checked.
    pub(crate) fn drain(&self) -> Drained {
        let mut q = lock(&self.queue);
        q.bytes = 0;
        Drained {
            events: std::mem::take(&mut q.events),
            close: q.close,
            recheck: std::mem::take(&mut q.recheck),
        }
    }
}

/// Counters for metrics (read with [`crate::Realtime::stats`]).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) connections: AtomicU64,
    pub(crate) subscriptions: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) recovered: AtomicU64,
    pub(crate) not_recovered: AtomicU64,
    pub(crate) lagged: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) disconnects: Mutex<BTreeMap<u16, u64>>,
}

/// A snapshot of a [`crate::Realtime`]'s counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RealtimeStats {
    /// Open connections on this instance.
    pub connections: u64,
    /// Subscriptions held by them.
    pub subscriptions: u64,
    /// Event frames written to clients.
    pub messages_sent: u64,
    /// Events dropped because a slow consumer's queue overflowed (its connection closed).
    pub messages_dropped: u64,
    /// Subscriptions with `since` that history could serve.
    pub recoveries: u64,
    /// Subscriptions with `since` answered `recovered: false`.
    pub recoveries_failed: u64,
    /// Times this instance fell behind its backplane (its connections were closed to resume).
    pub backplane_lagged: u64,
    /// Handshakes refused (auth, origin, caps).
    pub handshakes_refused: u64,
    /// Closed connections by close code.
    pub disconnects: BTreeMap<u16, u64>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    Tenant,
    Server,
    ShuttingDown,
}

#[derive(Debug, Default)]
pub(crate) struct Hub {
    channels: RwLock<HashMap<ChannelKey, HashMap<u64, Arc<Conn>>>>,
    conns: RwLock<HashMap<u64, Arc<Conn>>>,
    tenants: Mutex<HashMap<TenantId, usize>>,
    next_id: AtomicU64,
    closing: AtomicBool,
    pub(crate) stats: Stats,
}

/// A connection's place in the hub; leaving it (drop) unsubscribes everything and frees the
/// tenant's slot.
#[derive(Debug)]
pub(crate) struct Admission {
    hub: Arc<Hub>,
    pub(crate) conn: Arc<Conn>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.hub.leave(&self.conn);
    }
}

impl Hub {
    pub(crate) fn admit(
        self: &Arc<Self>,
        (tenant, user, session): (TenantId, UserId, SessionId),
        per_tenant: usize,
        total: usize,
        budget: usize,
    ) -> Result<Admission, Full> {
        if self.closing.load(Ordering::Acquire) {
            return Err(Full::ShuttingDown);
        }
        {
            let mut tenants = lock(&self.tenants);
            if self.stats.connections.load(Ordering::Relaxed) >= total as u64 {
                return Err(Full::Server);
            }
            let count = tenants.entry(tenant).or_default();
            if *count >= per_tenant {
                return Err(Full::Tenant);
            }
            *count += 1;
            self.stats.connections.fetch_add(1, Ordering::Relaxed);
        }
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            tenant,
            user,
            session,
            budget,
            queue: Mutex::default(),
            notify: Notify::new(),
            channels: Mutex::default(),
        });
        self.conns
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(conn.id, conn.clone());
        Ok(Admission {
            hub: self.clone(),
            conn,
        })
    }

    fn leave(&self, conn: &Arc<Conn>) {
        let keys = std::mem::take(&mut *lock(&conn.channels));
        for key in &keys {
            self.remove_subscriber(key, conn.id);
        }
        self.conns
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&conn.id);
        let mut tenants = lock(&self.tenants);
        if let Some(count) = tenants.get_mut(&conn.tenant) {
            *count -= 1;
            if *count == 0 {
                tenants.remove(&conn.tenant);
            }
        }
        self.stats.connections.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn subscribe(&self, conn: &Arc<Conn>, key: &ChannelKey) {
        self.channels
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .insert(conn.id, conn.clone());
        lock(&conn.channels).push(key.clone());
        self.stats.subscriptions.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn unsubscribe(&self, conn: &Conn, key: &ChannelKey) {
        let mut channels = lock(&conn.channels);
        let before = channels.len();
        channels.retain(|k| k != key);
        if channels.len() != before {
            drop(channels);
            self.remove_subscriber(key, conn.id);
        }
    }

    fn remove_subscriber(&self, key: &ChannelKey, id: u64) {
        let mut channels = self
            .channels
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(subs) = channels.get_mut(key) {
            if subs.remove(&id).is_some() {
                self.stats.subscriptions.fetch_sub(1, Ordering::Relaxed);
            }
            if subs.is_empty() {
                channels.remove(key);
            }
        }
    }

    /// Queues `event` for every local subscriber of its channel; an event that changes access
    /// makes every connection of its tenant re-check its subscriptions first.
    pub(crate) fn deliver(&self, event: &Arc<Event>) {
        if event.access_changed {
            for conn in self
                .conns
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
            {
                if conn.tenant == event.channel.tenant {
                    conn.recheck();
                }
            }
        }
        let channels = self.channels.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(subs) = channels.get(&event.channel) {
            for conn in subs.values() {
                conn.push(event, &self.stats);
            }
        }
    }

    /// Closes (4002) every connection whose session `revocation` ended.
    pub(crate) fn revoke(&self, revocation: &Revocation) {
        if revocation.scope == RevocationScope::Missed {
            // Which sessions ended is unknown: every client reconnects, and the handshake
            // checks its session again.
            tracing::warn!("realtime: revocations may have been missed; closing connections");
            self.close_all(close::TRY_AGAIN);
            return;
        }
        for conn in self
            .conns
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            if revocation.covers(conn.session, conn.user, conn.tenant) {
                conn.close(close::SESSION_REVOKED);
            }
        }
    }

    /// Closes every connection with `code`.
    pub(crate) fn close_all(&self, code: u16) {
        for conn in self
            .conns
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            conn.close(code);
        }
    }

    /// Refuses new connections and closes the open ones (1001).
    pub(crate) fn shut_down(&self) {
        self.closing.store(true, Ordering::Release);
        self.close_all(close::GOING_AWAY);
    }

    pub(crate) fn record_close(&self, code: u16) {
        *lock(&self.stats.disconnects).entry(code).or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> RealtimeStats {
        let s = &self.stats;
        RealtimeStats {
            connections: s.connections.load(Ordering::Relaxed),
            subscriptions: s.subscriptions.load(Ordering::Relaxed),
            messages_sent: s.sent.load(Ordering::Relaxed),
            messages_dropped: s.dropped.load(Ordering::Relaxed),
            recoveries: s.recovered.load(Ordering::Relaxed),
            recoveries_failed: s.not_recovered.load(Ordering::Relaxed),
            backplane_lagged: s.lagged.load(Ordering::Relaxed),
            handshakes_refused: s.refused.load(Ordering::Relaxed),
            disconnects: lock(&s.disconnects).clone(),
        }
    }
}
