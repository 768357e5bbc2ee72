//! The sweeper: expired pending uploads and orphaned objects go, past a grace period.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use time::OffsetDateTime;

use tenantkit_core::{AuditEvent, SystemTx, TenantId, with_conn};

use super::{Storage, SweepReport, UploadId};
use crate::{ObjectId, ObjectKey, Result};

impl Storage {
    /// Removes pending and rejected uploads expired for longer than the grace period (each
    /// row first, under its condition, then its object), and objects older than the grace
    /// period that no file, pending upload or unexpired upload refers to (see
    /// `referenced`).
    ///
    /// # Errors
    /// Database and store errors (what was removed before stays removed).
    pub async fn sweep(&self, now: OffsetDateTime) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        let cutoff = now - self.limits.sweep_grace;
        loop {
            let mut tx = self.db.begin_system().await?;
            let expired: Vec<(UploadId, TenantId, ObjectId)> = with_conn!(&mut tx, |c| {
                sqlx::query_as(
                    "SELECT id, tenant_id, object_id FROM storage_uploads \
                     WHERE state IN ('pending', 'rejected') AND expires_at < $1 \
                     ORDER BY expires_at LIMIT 100",
                )
                .bind(cutoff)
                .fetch_all(c)
                .await
            })?;
            tx.commit().await?;
            if expired.is_empty() {
                break;
            }
            for (id, tenant, object) in expired {
                // The row goes first, under its own condition, and the object only after the
                // commit: a completion that won the race keeps its row and its bytes, and a
                // failed object delete leaves an orphan (removed below, later), never a
                // row without bytes.
                let mut tx = self.db.begin_system().await?;
                let removed = with_conn!(&mut tx, |c| {
                    sqlx::query(
                        "DELETE FROM storage_uploads WHERE id = $1 \
                         AND state IN ('pending', 'rejected') AND expires_at < $2",
                    )
                    .bind(id)
                    .bind(cutoff)
                    .execute(c)
                    .await
                    .map(|done| done.rows_affected())
                })?;
                if removed > 0 {
                    tx.audit_in(
                        tenant,
                        AuditEvent::new("upload.expired").target("upload", id),
                    )
                    .await?;
                }
                tx.commit().await?;
                if removed > 0 {
                    self.store.delete(&ObjectKey::new(tenant, object)).await?;
                    report.expired_uploads += 1;
                }
            }
        }
        let mut after: Option<ObjectKey> = None;
        loop {
            let batch = self.store.list(after.as_ref(), 500).await?;
            let Some(last) = batch.last() else {
                break;
            };
            after = Some(last.key.clone());
            for info in batch {
                if info.modified >= cutoff {
                    continue;
                }
                let mut tx = self.db.begin_system_read().await?;
                let known = referenced(&mut tx, info.key.object(), cutoff).await?;
                tx.commit().await?;
                if !known {
                    self.store.delete(&info.key).await?;
                    report.orphans += 1;
                }
            }
        }
        Ok(report)
    }
}

/// Sweeps a [`Storage`] on an interval ([`Sweeper::run`]), counting what it removed.
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn demo(storage: tenantkit_storage::Storage) {
/// let sweeper = tenantkit_storage::Sweeper::new(storage, std::time::Duration::from_secs(600));
/// let stats = sweeper.stats(); // for metrics, readable while it runs
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let task = tokio::spawn(async move { sweeper.run(async { let _ = stopped.await; }).await });
/// // … serve …
/// let _ = stop.send(());
/// let _ = task.await;
/// println!("{} expired uploads removed", stats.expired_uploads());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Sweeper {
    storage: Storage,
    interval: std::time::Duration,
    clock: fn() -> OffsetDateTime,
    stats: SweeperStats,
}

/// What a [`Sweeper`] did so far: counters for metrics, readable while it runs. A cheap
/// handle ([`Sweeper::stats`]); every count only grows.
#[derive(Debug, Clone, Default)]
pub struct SweeperStats {
    inner: Arc<SweeperCounters>,
}

#[derive(Debug, Default)]
struct SweeperCounters {
    sweeps: AtomicU64,
    expired_uploads: AtomicU64,
    orphans: AtomicU64,
    failures: AtomicU64,
}

impl SweeperStats {
    /// Sweeps that completed.
    pub fn sweeps(&self) -> u64 {
        self.inner.sweeps.load(Ordering::Relaxed)
    }

    /// Expired uploads removed (with their objects) by completed sweeps.
    pub fn expired_uploads(&self) -> u64 {
        self.inner.expired_uploads.load(Ordering::Relaxed)
    }

    /// Orphaned objects removed by completed sweeps.
    pub fn orphans(&self) -> u64 {
        self.inner.orphans.load(Ordering::Relaxed)
    }

    /// Sweeps that failed (a database or store error; what they removed before stays
    /// removed, and the next sweep carries on).
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }
}

impl Sweeper {
    /// A sweeper of `storage` every `interval` (at least one millisecond), the first sweep at
    /// once.
    pub fn new(storage: Storage, interval: std::time::Duration) -> Self {
        Self {
            storage,
            interval: interval.max(std::time::Duration::from_millis(1)),
            clock: tenantkit_core::now,
            stats: SweeperStats::default(),
        }
    }

    /// Reads the time of each sweep from `clock` instead of the system clock (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: fn() -> OffsetDateTime) -> Self {
        self.clock = clock;
        self
    }

    /// The counters of this sweeper and its clones.
    pub fn stats(&self) -> SweeperStats {
        self.stats.clone()
    }

    /// One sweep ([`Storage::sweep`]) at `now`, counted.
    ///
    /// # Errors
    /// As [`Storage::sweep`].
    pub async fn sweep_once(&self, now: OffsetDateTime) -> Result<SweepReport> {
        let counters = &self.stats.inner;
        match self.storage.sweep(now).await {
            Ok(report) => {
                counters.sweeps.fetch_add(1, Ordering::Relaxed);
                counters
                    .expired_uploads
                    .fetch_add(report.expired_uploads, Ordering::Relaxed);
                counters
                    .orphans
                    .fetch_add(report.orphans, Ordering::Relaxed);
                Ok(report)
            }
            Err(err) => {
                counters.failures.fetch_add(1, Ordering::Relaxed);
                Err(err)
            }
        }
    }

    /// Sweeps every interval until `shutdown` completes (the first sweep at once; a sweep
    /// that overruns the interval delays the next instead of bunching them). Failures are
    /// logged and counted, and the next sweep tries again.
    ///
    /// A sweep in progress when `shutdown` completes is abandoned at once: each removal
    /// deletes its row before its object, so an interrupted one leaves at most an orphaned
    /// object, which a later sweep removes.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let mut every = tokio::time::interval(self.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let work = async {
            loop {
                every.tick().await;
                match self.sweep_once((self.clock)()).await {
                    Ok(report) if report.expired_uploads + report.orphans > 0 => {
                        tracing::info!(
                            expired_uploads = report.expired_uploads,
                            orphans = report.orphans,
                            "storage swept"
                        );
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = %err, "storage sweep failed"),
                }
            }
        };
        tokio::select! {
            () = shutdown => {}
            () = work => {}
        }
    }
}

/// Whether a file, a pending upload, or an upload whose instructions were valid until
/// `cutoff` or later refers to `object`. (A completed S3 upload's staging object, whose bytes
/// were copied to the file's own key, is kept until then so that its create-only URL stays
/// used, and is an orphan afterwards.)
async fn referenced(tx: &mut SystemTx, object: ObjectId, cutoff: OffsetDateTime) -> Result<bool> {
    let found: Option<i32> = with_conn!(tx, |c| {
        sqlx::query_scalar(
            "SELECT 1 FROM storage_uploads WHERE object_id = $1 \
             AND (state = 'pending' OR expires_at >= $2) \
             UNION ALL SELECT 1 FROM storage_files WHERE object_id = $1 LIMIT 1",
        )
        .bind(object)
        .bind(cutoff)
        .fetch_optional(c)
        .await
    })?;
    Ok(found.is_some())
}
