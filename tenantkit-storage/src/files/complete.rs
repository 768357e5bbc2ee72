//! Completion: an upload becomes a file once its object is exactly what was declared.

use tenantkit_core::{ClientInfo, Principal, TenantScope, with_conn};

use super::{FileId, Storage, StoredFile, Upload, UploadId};
use crate::store::ObjectMeta;
use crate::{Error, ObjectKey, Result, Sha256, sniff};

impl Storage {
    /// Turns an upload into a file once its object is in the store and is exactly what was
    /// declared: size, SHA-256, stored type, and the declared type against the first bytes.
    /// Idempotent: completing a completed upload answers the same file, and concurrent
    /// completes make exactly one file. A mismatch deletes the object and the upload.
    ///
    /// # Errors
    /// [`tenantkit_core::Error::NotFound`] (also another tenant's id),
    /// [`Error::UploadIncomplete`], [`Error::UploadMismatch`].
    pub async fn complete(
        &self,
        principal: &Principal,
        client: &ClientInfo,
        id: UploadId,
    ) -> Result<StoredFile> {
        principal.require(tenantkit_core::Permission::WriteContent)?;
        let scope = TenantScope::of(principal);
        let upload = {
            let mut tx = self.db.begin_read(&scope).await?;
            let upload = self.find_upload(&mut tx, id).await?;
            tx.commit().await?;
            upload.ok_or(Error::Core(tenantkit_core::Error::NotFound))?
        };
        if let Some(file_id) = upload.file_id {
            return self.read_file(&scope, file_id).await;
        }
        let key = ObjectKey::new(upload.tenant_id, upload.object_id);
        let meta = self
            .store
            .head(&key)
            .await?
            .ok_or(Error::UploadIncomplete)?;
        if let Some(what) = self.mismatch(&key, &upload, meta).await? {
            self.store.delete(&key).await?;
            let mut tx = self.db.begin(&scope).await?;
            let removed = with_conn!(&mut tx, |c| {
                sqlx::query(
                    "DELETE FROM storage_uploads WHERE tenant_id = $1 AND id = $2 AND state = 'pending'",
                )
                .bind(upload.tenant_id)
                .bind(upload.id)
                .execute(c)
                .await
                .map(|done| done.rows_affected())
            })?;
            if removed > 0 {
                tx.audit(
                    client
                        .event("upload.rejected", Some(principal.user_id()))
                        .target("upload", upload.id)
                        .details(serde_json::json!({
                            "mismatch": what,
                            "content_type": upload.content_type,
                            "size": upload.size,
                        })),
                )
                .await?;
            }
            tx.commit().await?;
            return Err(Error::UploadMismatch(what));
        }
        let mut tx = self.db.begin(&scope).await?;
        let file_id = FileId::new();
        let now = tenantkit_core::now();
        // No conflict target: a concurrent completion of the same upload collides on
        // `upload_id` or on `object_id`, whichever unique index PostgreSQL checks first, and
        // with a target only that one would be an arbiter (the other answered 409).
        let inserted = with_conn!(&mut tx, |c| {
            sqlx::query(
                "INSERT INTO storage_files (id, tenant_id, upload_id, object_id, project_id, \
                 filename, content_type, size, sha256, created_by, created_at) \
                 SELECT $1, u.tenant_id, u.id, u.object_id, u.project_id, u.filename, \
                 u.content_type, u.size, u.sha256, u.created_by, $2 FROM storage_uploads u \
                 WHERE u.tenant_id = $3 AND u.id = $4 AND u.state = 'pending' \
                 ON CONFLICT DO NOTHING",
            )
            .bind(file_id)
            .bind(now)
            .bind(upload.tenant_id)
            .bind(upload.id)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
        })?;
        if inserted == 0 {
            // Someone completed it first (or it was swept): answer what is there now.
            tx.commit().await?;
            let mut tx = self.db.begin_read(&scope).await?;
            let upload = self.find_upload(&mut tx, id).await?;
            tx.commit().await?;
            return match upload.and_then(|u| u.file_id) {
                Some(file_id) => self.read_file(&scope, file_id).await,
                None => Err(Error::Core(tenantkit_core::Error::NotFound)),
            };
        }
        with_conn!(&mut tx, |c| {
            sqlx::query(
                "UPDATE storage_uploads SET state = 'completed', file_id = $1 \
                 WHERE tenant_id = $2 AND id = $3",
            )
            .bind(file_id)
            .bind(upload.tenant_id)
            .bind(upload.id)
            .execute(c)
            .await
            .map(drop)
        })?;
        tx.audit(
            client
                .event("upload.completed", Some(principal.user_id()))
                .target("file", file_id)
                .details(serde_json::json!({
                    "upload_id": upload.id,
                    "content_type": upload.content_type,
                    "size": upload.size,
                })),
        )
        .await?;
        tx.commit().await?;
        self.read_file(&scope, file_id).await
    }

    /// What of the stored object differs from the declaration, if anything: its size, its
    /// stored type, its SHA-256 (read from the store's checksum or, without one, computed),
    /// or its first bytes against the declared type.
    async fn mismatch(
        &self,
        key: &ObjectKey,
        upload: &Upload,
        meta: ObjectMeta,
    ) -> Result<Option<&'static str>> {
        let declared_sha = Sha256(
            upload
                .sha256
                .as_slice()
                .try_into()
                .map_err(|_| Error::Store("stored sha256 is not 32 bytes".into()))?,
        );
        if i64::try_from(meta.size).ok() != Some(upload.size) {
            return Ok(Some("size"));
        }
        if meta
            .content_type
            .as_deref()
            .is_some_and(|stored| !stored.eq_ignore_ascii_case(&upload.content_type))
        {
            return Ok(Some("content type"));
        }
        let stored_sha = match meta.sha256 {
            Some(sha) => Some(sha),
            None => self.store.digest(key).await?,
        };
        if stored_sha != Some(declared_sha) {
            return Ok(Some("sha256"));
        }
        let prefix = self.store.read_prefix(key, sniff::SNIFF_BYTES).await?;
        Ok(sniff::check(&upload.content_type, &prefix)
            .err()
            .map(|_| "content"))
    }
}
