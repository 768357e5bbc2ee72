//! The password-hashing workers: at most one thread per core, started on demand, each with
//! its argon2 buffer, behind a bounded queue (refused with `Overloaded` beyond it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use argon2::Block;

use crate::{Error, Result};

/// Waiting hashes allowed per worker, by default.
pub(super) const QUEUE_PER_WORKER: usize = 16;

/// A worker idle this long gives its memory back.
const IDLE_RELEASE: Duration = Duration::from_secs(1);

/// What an overloaded hasher tells callers to wait.
const OVERLOADED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A job for a worker: gets the worker's memory buffer.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// The worker threads and the bounded queue in front of them.
pub(super) struct Workers {
    jobs: flume::Sender<Job>,
    receiver: flume::Receiver<Job>,
    pub(super) count: usize,
    pub(super) queue: usize,
    blocks: usize,
    pub(super) counters: Arc<Counters>,
}

#[derive(Default)]
pub(super) struct Counters {
    /// Jobs admitted and not finished: running plus waiting. At most `count + queue`.
    pub(super) admitted: AtomicUsize,
    /// Jobs a worker is running now.
    pub(super) running: AtomicUsize,
    /// Worker threads alive now (at most `count`).
    pub(super) alive: AtomicUsize,
    pub(super) started: AtomicU64,
    pub(super) refused: AtomicU64,
}

impl Workers {
    /// At most `count` threads, started when jobs arrive, whose buffers hold `blocks` argon2
    /// blocks. A thread idle for a second ends, and its buffer and its allocator heap go with
    /// it: an idle hasher costs no memory (a thread that merely frees its buffer can leave the
    /// pages resident in a thread-caching allocator), and a storm holds exactly `count`
    /// buffers.
    pub(super) fn start(count: usize, queue: usize, blocks: usize) -> Self {
        let (jobs, receiver) = flume::unbounded::<Job>();
        Self {
            jobs,
            receiver,
            count,
            queue,
            blocks,
            counters: Arc::new(Counters::default()),
        }
    }

    /// Starts a worker unless `count` are alive.
    fn ensure_worker(&self) {
        let reserved =
            self.counters
                .alive
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |alive| {
                    (alive < self.count).then_some(alive + 1)
                });
        if reserved.is_err() {
            return;
        }
        let (receiver, counters, blocks, count) = (
            self.receiver.clone(),
            Arc::clone(&self.counters),
            self.blocks,
            self.count,
        );
        let n = self.counters.started.load(Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name(format!("tenantkit-argon2-{n}"))
            .stack_size(256 * 1024)
            .spawn(move || {
                let mut memory: Vec<Block> = Vec::new();
                loop {
                    match receiver.recv_timeout(IDLE_RELEASE) {
                        Ok(job) => {
                            if memory.len() < blocks {
                                memory = argon2_memory(blocks);
                            }
                            job(&mut memory);
                        }
                        // Idle: end the thread, unless a job arrived while it was deciding and
                        // no other worker was started for it (never more than `count`).
                        Err(flume::RecvTimeoutError::Timeout) => {
                            counters.alive.fetch_sub(1, Ordering::AcqRel);
                            if receiver.is_empty() {
                                return;
                            }
                            let back = counters.alive.fetch_update(
                                Ordering::AcqRel,
                                Ordering::Acquire,
                                |alive| (alive < count).then_some(alive + 1),
                            );
                            if back.is_err() {
                                return;
                            }
                        }
                        Err(flume::RecvTimeoutError::Disconnected) => {
                            counters.alive.fetch_sub(1, Ordering::AcqRel);
                            return;
                        }
                    }
                }
            });
        if let Err(err) = spawned {
            self.counters.alive.fetch_sub(1, Ordering::AcqRel);
            tracing::error!(error = %err, "could not start a password-hashing thread");
        }
    }

    /// Runs `work` on a worker with its buffer. Refused at once when `count` jobs run and
    /// `queue` wait already. A job whose caller went away before a worker took it is skipped.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T> {
        let limit = self.count + self.queue;
        let admitted =
            self.counters
                .admitted
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                    (now < limit).then_some(now + 1)
                });
        if admitted.is_err() {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Overloaded {
                retry_after: OVERLOADED_RETRY_AFTER,
            });
        }
        let (done, answer) = tokio::sync::oneshot::channel();
        let counters = Arc::clone(&self.counters);
        let job: Job = Box::new(move |memory| {
            if done.is_closed() {
                counters.admitted.fetch_sub(1, Ordering::AcqRel);
                return;
            }
            counters.running.fetch_add(1, Ordering::AcqRel);
            counters.started.fetch_add(1, Ordering::Relaxed);
            let output = work(memory);
            // The slot is free before the caller hears back, so its next request (or anyone's)
            // finds it free.
            counters.running.fetch_sub(1, Ordering::AcqRel);
            counters.admitted.fetch_sub(1, Ordering::AcqRel);
            let _ = done.send(output);
        });
        if self.jobs.send(job).is_err() {
            self.counters.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::Hashing(
                "no password-hashing thread is running".into(),
            ));
        }
        // After the send: a worker that is just ending sees the job and stays.
        self.ensure_worker();
        answer
            .await
            .map_err(|_| Error::Hashing("the hashing thread failed".into()))
    }
}

/// glibc's largest dynamic mmap threshold (32 MiB on 64-bit) plus 1 MiB, in argon2 blocks.
pub(super) const OWN_MAPPING_BLOCKS: usize = (33 << 20) / argon2::Block::SIZE;

/// `blocks` argon2 blocks (zeroed) in an allocation that is always its own memory mapping:
/// its capacity is above the largest threshold glibc's malloc ever moves its mmap threshold
/// to, so freeing it returns the pages to the operating system at once. (A 19 MiB buffer
/// would move the threshold up on its first free and then live in the heap, which glibc
/// keeps: 38 MB of resident memory after a login storm on two cores.) The pages past
/// `blocks` are never touched, so they are never resident.
pub(super) fn argon2_memory(blocks: usize) -> Vec<Block> {
    let mut memory = Vec::with_capacity(blocks.max(OWN_MAPPING_BLOCKS));
    memory.resize(blocks, Block::default());
    memory
}
