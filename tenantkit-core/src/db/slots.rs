//! A fixed set of connection slots, each behind a mutex of its own, with one semaphore permit
//! per slot: what SQLite's readers and PostgreSQL's connections are held in instead of an
//! sqlx pool. A pool hands a connection back through a task it spawns (and, on PostgreSQL,
//! a ping: one more round trip per request); a mutex hands it to the next holder directly.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

/// `count` slots of `T`.
pub(crate) struct Slots<T> {
    /// One permit per slot: a holder always finds a free slot.
    permits: Arc<Semaphore>,
    slots: Box<[Arc<Mutex<T>>]>,
    next: AtomicUsize,
    acquire_timeout: Duration,
}

/// One slot while its holder has it (the permit is given back after the slot).
pub(crate) struct Held<T> {
    /// Declared first: dropped before the permit, so the slot is free when the next permit
    /// is handed out.
    pub(crate) slot: OwnedMutexGuard<T>,
    _permit: OwnedSemaphorePermit,
}

impl<T: Default> Slots<T> {
    /// `count` (at least one) empty slots.
    pub(crate) fn new(count: u32, acquire_timeout: Duration) -> Self {
        let count = usize::try_from(count.max(1)).unwrap_or(1);
        Self {
            permits: Arc::new(Semaphore::new(count)),
            slots: (0..count).map(|_| Arc::default()).collect(),
            next: AtomicUsize::new(0),
            acquire_timeout,
        }
    }
}

impl<T> Slots<T> {
    /// How many slots there are.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// A free slot, waiting for whichever frees first (at most the acquire timeout, then
    /// `PoolTimedOut`, as a pool would answer; `PoolClosed` once closed).
    pub(crate) async fn acquire(&self) -> Result<Held<T>, sqlx::Error> {
        let permit =
            tokio::time::timeout(self.acquire_timeout, self.permits.clone().acquire_owned())
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)?
                .map_err(|_| sqlx::Error::PoolClosed)?;
        Ok(self.take(permit).await)
    }

    /// Slot `index`, if it and a permit are free now (PostgreSQL's settling task).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn try_acquire_at(&self, index: usize) -> Option<Held<T>> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        let slot = self.slots.get(index)?.clone().try_lock_owned().ok()?;
        Some(Held {
            slot,
            _permit: permit,
        })
    }

    async fn take(&self, permit: OwnedSemaphorePermit) -> Held<T> {
        let count = self.slots.len();
        loop {
            // With a permit, at most `count - 1` others hold slots: one is free (another
            // permit holder may take it first, so look again).
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            if let Some(slot) = (0..count).find_map(|i| {
                self.slots[(start + i) % count]
                    .clone()
                    .try_lock_owned()
                    .ok()
            }) {
                return Held {
                    slot,
                    _permit: permit,
                };
            }
            tokio::task::yield_now().await;
        }
    }

    /// Waits for every holder to be done (taking every permit, so nobody can start using
    /// a slot meanwhile), gives every slot to `each`, then refuses new holders for good.
    pub(crate) async fn close(&self, mut each: impl AsyncFnMut(&mut T)) {
        let count = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        let all = self.permits.acquire_many(count).await;
        for slot in &self.slots {
            each(&mut *slot.lock().await).await;
        }
        self.permits.close();
        drop(all);
    }
}
