//! Completion: an upload becomes a file once its object is exactly what was declared.
//!
//! The order is what makes the verification mean something:
//!
//! 1. the object is *pinned* ([`ObjectStore::pin`]): from then on its bytes sit under a key no
//!    client can write (on S3 a server-side copy, since a POST form can be posted again while
//!    it lasts; the local store's uploads are already final);
//! 2. the pinned bytes are verified (size, type, SHA-256, content sniffing over the whole
//!    object where a browser could render it);
//! 3. the upload row is settled under its own condition (`state = 'pending'`): it becomes a
//!    file pointing at the pinned key, or `rejected`. Objects are deleted only after that,
//!    and only those this attempt owns, so a mismatch seen by one attempt never deletes the
//!    bytes of a file another attempt completed.
//!
//! [`ObjectStore::pin`]: crate::ObjectStore::pin

use sha2::Digest as _;
use tenantkit_core::{ClientInfo, Principal, TenantScope, with_conn};

use super::{FileId, Storage, StoredFile, Upload, UploadId};
use crate::sniff::{self, Scanner};
use crate::{Error, ObjectId, ObjectKey, Result, Sha256};

/// How one attempt settled a pending upload.
enum Settled {
    /// It became this file.
    File(FileId),
    /// It was rejected for this reason.
    Rejected(&'static str),
}

impl Storage {
    /// Turns an upload into a file once its object is in the store and is exactly what was
    /// declared: size, SHA-256, stored type, and the declared type against the bytes (see
    /// [`crate::sniff`]). The bytes verified are the bytes downloads return: the object is
    /// pinned first ([`crate::ObjectStore::pin`]) and the file points at the pinned key.
    ///
    /// Idempotent: completing a completed upload answers the same file, completing a
    /// rejected one answers the same mismatch, and concurrent completes make exactly one
    /// file. A mismatch marks the upload `rejected` (while it is still pending) and then
    /// deletes its object. An upload whose instructions expired cannot complete.
    ///
    /// # Errors
    /// [`tenantkit_core::Error::NotFound`] (also another tenant's id, or a swept upload),
    /// [`Error::UploadIncomplete`], [`Error::UploadExpired`], [`Error::UploadMismatch`].
    pub async fn complete(
        &self,
        principal: &Principal,
        client: &ClientInfo,
        id: UploadId,
    ) -> Result<StoredFile> {
        principal.require(tenantkit_core::Permission::WriteContent)?;
        let scope = TenantScope::of(principal);
        let upload = self
            .current_upload(&scope, id)
            .await?
            .ok_or(Error::Core(tenantkit_core::Error::NotFound))?;
        if let Some(answer) = self.settled_answer(&scope, &upload).await {
            return answer;
        }
        if upload.expires_at <= tenantkit_core::now() {
            return Err(Error::UploadExpired);
        }
        let staging = ObjectKey::new(upload.tenant_id, upload.object_id);
        let pinned = self
            .store
            .pin(&staging, &ObjectKey::new(upload.tenant_id, ObjectId::new()))
            .await?
            .ok_or(Error::UploadIncomplete)?;
        // A copy made by this attempt is this attempt's alone: kept as the file's bytes, or
        // deleted. Once copied, the staging object is never a file's bytes.
        let copy = (pinned != staging).then(|| pinned.clone());
        let outcome = match self.mismatch(&pinned, &upload).await {
            Ok(None) => self
                .keep(principal, client, &scope, &upload, &pinned)
                .await
                .map(|kept| kept.map(Settled::File)),
            Ok(Some(what)) => self
                .reject(principal, client, &scope, &upload, what)
                .await
                .map(|rejected| rejected.then_some(Settled::Rejected(what))),
            Err(err) => Err(err),
        };
        match outcome {
            // The staging object stays while the upload's instructions are valid, so that a
            // second upload to its create-only URL is still refused; the sweeper removes it
            // once they have expired (plus the grace period).
            Ok(Some(Settled::File(file_id))) => self.read_file(&scope, file_id).await,
            Ok(Some(Settled::Rejected(what))) => {
                if let Some(copy) = &copy {
                    self.forget(copy).await;
                }
                self.forget(&staging).await;
                Err(Error::UploadMismatch(what))
            }
            Ok(None) => {
                // Another attempt settled it first (or the sweeper removed it): answer what
                // is there now; this attempt's copy is nobody's.
                if let Some(copy) = &copy {
                    self.forget(copy).await;
                }
                let upload = self
                    .current_upload(&scope, id)
                    .await?
                    .ok_or(Error::Core(tenantkit_core::Error::NotFound))?;
                match self.settled_answer(&scope, &upload).await {
                    Some(answer) => answer,
                    None => Err(Error::Core(tenantkit_core::Error::NotFound)),
                }
            }
            Err(err) => {
                if let Some(copy) = &copy {
                    self.forget(copy).await;
                }
                Err(err)
            }
        }
    }

    async fn current_upload(&self, scope: &TenantScope, id: UploadId) -> Result<Option<Upload>> {
        let mut tx = self.db.begin_read(scope).await?;
        let upload = self.find_upload(&mut tx, id).await?;
        tx.commit().await?;
        Ok(upload)
    }

    /// The answer for an upload that is no longer pending: its file, or its mismatch again
    /// (so a retrying client learns what happened).
    async fn settled_answer(
        &self,
        scope: &TenantScope,
        upload: &Upload,
    ) -> Option<Result<StoredFile>> {
        if let Some(file_id) = upload.file_id {
            return Some(self.read_file(scope, file_id).await);
        }
        (upload.state == "rejected").then(|| {
            Err(Error::UploadMismatch(rejection_reason(
                upload.rejection.as_deref(),
            )))
        })
    }

    /// Makes the upload a file whose bytes are at `object`, if it is still pending: `None`
    /// when it is not (completed, rejected or swept meanwhile).
    async fn keep(
        &self,
        principal: &Principal,
        client: &ClientInfo,
        scope: &TenantScope,
        upload: &Upload,
        object: &ObjectKey,
    ) -> Result<Option<FileId>> {
        let mut tx = self.db.begin(scope).await?;
        let file_id = FileId::new();
        let now = tenantkit_core::now();
        // The claim comes first and is conditional: it takes the row's lock (a concurrent
        // completion or rejection waits, then sees the new state), so exactly one attempt
        // settles the upload, and never one that another attempt already rejected.
        let claimed = with_conn!(&mut tx, |c| {
            sqlx::query(
                "UPDATE storage_uploads SET state = 'completed', file_id = $1 \
                 WHERE tenant_id = $2 AND id = $3 AND state = 'pending'",
            )
            .bind(file_id)
            .bind(upload.tenant_id)
            .bind(upload.id)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
        })?;
        if claimed == 0 {
            tx.commit().await?;
            return Ok(None);
        }
        with_conn!(&mut tx, |c| {
            sqlx::query(
                "INSERT INTO storage_files (id, tenant_id, upload_id, object_id, project_id, \
                 filename, content_type, size, sha256, created_by, created_at) \
                 SELECT $1, u.tenant_id, u.id, $2, u.project_id, u.filename, \
                 u.content_type, u.size, u.sha256, u.created_by, $3 FROM storage_uploads u \
                 WHERE u.tenant_id = $4 AND u.id = $5",
            )
            .bind(file_id)
            .bind(object.object())
            .bind(now)
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
        Ok(Some(file_id))
    }

    /// Marks the upload rejected for `what`, if it is still pending; `false` when it is not.
    /// Its objects are deleted only after this, by the caller.
    async fn reject(
        &self,
        principal: &Principal,
        client: &ClientInfo,
        scope: &TenantScope,
        upload: &Upload,
        what: &'static str,
    ) -> Result<bool> {
        let mut tx = self.db.begin(scope).await?;
        let rejected = with_conn!(&mut tx, |c| {
            sqlx::query(
                "UPDATE storage_uploads SET state = 'rejected', rejection = $1 \
                 WHERE tenant_id = $2 AND id = $3 AND state = 'pending'",
            )
            .bind(what)
            .bind(upload.tenant_id)
            .bind(upload.id)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
        })?;
        if rejected > 0 {
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
        Ok(rejected > 0)
    }

    /// Deletes an object no row keeps; a failure leaves an orphan the sweeper removes.
    async fn forget(&self, key: &ObjectKey) {
        if let Err(err) = self.store.delete(key).await {
            tracing::warn!(error = %err, "object no row keeps not deleted; the sweeper will");
        }
    }

    /// What of the stored object at `key` differs from the declaration, if anything: its
    /// size, its stored type, its SHA-256 (the store's checksum, else computed), or its bytes
    /// against the declared type ([`sniff`], over the whole object for types a browser could
    /// render). One streamed pass when the whole object is read.
    async fn mismatch(&self, key: &ObjectKey, upload: &Upload) -> Result<Option<&'static str>> {
        let declared_sha = Sha256(
            upload
                .sha256
                .as_slice()
                .try_into()
                .map_err(|_| Error::Store("stored sha256 is not 32 bytes".into()))?,
        );
        let meta = self.store.head(key).await?.ok_or(Error::UploadIncomplete)?;
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
        let mut scanner = Scanner::new(&upload.content_type);
        let stored_sha = match meta.sha256 {
            Some(sha) if !Scanner::reads_whole_object(&upload.content_type) => {
                scanner.update(&self.store.read_prefix(key, sniff::SNIFF_BYTES).await?);
                sha
            }
            recorded => {
                let mut hasher = sha2::Sha256::new();
                let mut read: u64 = 0;
                let found = {
                    let mut visit = |chunk: &[u8]| {
                        hasher.update(chunk);
                        scanner.update(chunk);
                        read = read.saturating_add(chunk.len() as u64);
                    };
                    self.store.read_all(key, &mut visit).await?
                };
                if !found {
                    return Err(Error::UploadIncomplete);
                }
                if read != meta.size {
                    return Ok(Some("size"));
                }
                let computed = Sha256(hasher.finalize().into());
                if recorded.is_some_and(|recorded| recorded != computed) {
                    return Ok(Some("sha256"));
                }
                computed
            }
        };
        if stored_sha != declared_sha {
            return Ok(Some("sha256"));
        }
        Ok(scanner.finish().err().map(|_| "content"))
    }
}

/// The reason recorded for a rejected upload, as the client-safe text of
/// [`Error::UploadMismatch`].
fn rejection_reason(recorded: Option<&str>) -> &'static str {
    match recorded {
        Some("size") => "size",
        Some("content type") => "content type",
        Some("sha256") => "sha256",
        _ => "content",
    }
}
