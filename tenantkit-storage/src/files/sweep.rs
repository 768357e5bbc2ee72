//! The sweeper: expired pending uploads and orphaned objects go, past a grace period.

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
