//! The sweeper: expired pending uploads and orphaned objects go, past a grace period.

use time::OffsetDateTime;

use tenantkit_core::{AuditEvent, SystemTx, TenantId, with_conn};

use super::{Storage, SweepReport, UploadId};
use crate::{ObjectId, ObjectKey, Result};

impl Storage {
    /// Removes pending uploads expired for longer than the grace period (and their
    /// objects), and objects older than the grace period that no upload or file refers to.
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
                     WHERE state = 'pending' AND expires_at < $1 ORDER BY expires_at LIMIT 100",
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
                self.store.delete(&ObjectKey::new(tenant, object)).await?;
                let mut tx = self.db.begin_system().await?;
                let removed = with_conn!(&mut tx, |c| {
                    sqlx::query("DELETE FROM storage_uploads WHERE id = $1 AND state = 'pending'")
                        .bind(id)
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
                    report.expired_uploads += 1;
                }
                tx.commit().await?;
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
                let known = referenced(&mut tx, info.key.object()).await?;
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

async fn referenced(tx: &mut SystemTx, object: ObjectId) -> Result<bool> {
    let found: Option<i32> = with_conn!(tx, |c| {
        sqlx::query_scalar(
            "SELECT 1 FROM storage_uploads WHERE object_id = $1 \
             UNION ALL SELECT 1 FROM storage_files WHERE object_id = $1 LIMIT 1",
        )
        .bind(object)
        .fetch_optional(c)
        .await
    })?;
    Ok(found.is_some())
}
