//! Completion: an upload becomes a file once its object is exactly what was declared.
//!
//! Two steps, so that no transaction of the caller is held across the object store's
//! network I/O (a head, reads of the bytes, on S3 a server-side copy):
//!
//! 1. [`Storage::verify_upload`], outside any transaction of the caller: the object is
//!    *pinned* ([`ObjectStore::pin`]): from then on its bytes sit under a key no client can
//!    write (on S3 a server-side copy, since a POST form can be posted again while it lasts;
//!    the local store's uploads are already final); then the pinned bytes are verified (size,
//!    type, SHA-256, content sniffing over the whole object where a browser could render
//!    it). A mismatch is settled here, in a transaction of its own (the upload becomes
//!    `rejected`, then its objects are deleted): it is storage's own bookkeeping, which no
//!    rollback of the caller's may undo.
//! 2. [`Storage::complete`], in the caller's transaction: the upload row is claimed under its
//!    own condition (`state = 'pending'`) and becomes a file pointing at the pinned key, with
//!    the caller's own rows in the same commit. Objects are deleted only after a row says
//!    they are nobody's, and only those this attempt owns, so a mismatch seen by one attempt
//!    never deletes the bytes of a file another attempt completed.
//!
//! [`ObjectStore::pin`]: crate::ObjectStore::pin

use sha2::Digest as _;
use tenantkit_core::{ClientInfo, Permission, Principal, TenantScope, TenantTx, with_conn};

use super::{FileId, Storage, StoredFile, Upload, UploadId, Verdict, VerifiedUpload, acting};
use crate::sniff::{self, Scanner};
use crate::{Error, ObjectId, ObjectKey, Result, Sha256};

impl Storage {
    /// The first step of completing an upload, outside any transaction of the caller: checks
    /// that its object is in the store and is exactly what was declared (size, SHA-256, stored
    /// type, and the declared type against the bytes, see [`crate::sniff`]). The bytes
    /// verified are the bytes downloads return: the object is pinned first
    /// ([`crate::ObjectStore::pin`]) and the file will point at the pinned key.
    ///
    /// Then open the caller's transaction and make the file with [`Storage::complete`]:
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # async fn demo(storage: &tenantkit_storage::Storage, db: &tenantkit_core::Database,
    /// #     caller: &tenantkit_core::Principal, client: &tenantkit_core::ClientInfo,
    /// #     id: tenantkit_storage::UploadId) -> tenantkit_storage::Result<()> {
    /// let verified = storage.verify_upload(caller, client, id).await?; // no transaction held
    /// let mut tx = db.begin(&tenantkit_core::TenantScope::of(caller)).await?;
    /// let file = storage.complete(&mut tx, caller, client, verified).await?;
    /// // … the app's own rows that refer to `file.id`, in the same transaction …
    /// tx.commit().await?;
    /// # let _ = file; Ok(()) }
    /// ```
    ///
    /// Idempotent: an upload completed before verifies as its file, a rejected one answers
    /// the same mismatch again, and concurrent completions make exactly one file. A mismatch
    /// is settled here, in a transaction of its own: the upload is marked `rejected` (while it
    /// is still pending, with its audit entry) and then its object is deleted. An upload whose
    /// instructions expired cannot complete.
    ///
    /// # Errors
    /// [`tenantkit_core::Error::Forbidden`] below member, [`tenantkit_core::Error::NotFound`]
    /// (also another tenant's id, or a swept upload), [`Error::UploadIncomplete`],
    /// [`Error::UploadExpired`], [`Error::UploadMismatch`].
    pub async fn verify_upload(
        &self,
        principal: &Principal,
        client: &ClientInfo,
        id: UploadId,
    ) -> Result<VerifiedUpload> {
        principal.require(Permission::WriteContent)?;
        let scope = TenantScope::of(principal);
        let upload = self
            .current_upload(&scope, id)
            .await?
            .ok_or(Error::Core(tenantkit_core::Error::NotFound))?;
        if let Some(verdict) = settled(&upload)? {
            return Ok(VerifiedUpload { upload, verdict });
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
        let what = match self.mismatch(&pinned, &upload).await {
            // The staging object stays while the upload's instructions are valid, so that a
            // second upload to its create-only URL is still refused; the sweeper removes it
            // once they have expired (plus the grace period).
            Ok(None) => {
                return Ok(VerifiedUpload {
                    upload,
                    verdict: Verdict::Matches(pinned),
                });
            }
            Ok(Some(what)) => what,
            Err(err) => {
                if let Some(copy) = &copy {
                    self.forget(copy).await;
                }
                return Err(err);
            }
        };
        let rejected = self.reject(principal, client, &scope, &upload, what).await;
        if let Some(copy) = &copy {
            self.forget(copy).await;
        }
        if rejected? {
            self.forget(&staging).await;
            return Err(Error::UploadMismatch(what));
        }
        // Another attempt settled it first (or the sweeper removed it): answer what is there
        // now.
        let upload = self
            .current_upload(&scope, id)
            .await?
            .ok_or(Error::Core(tenantkit_core::Error::NotFound))?;
        match settled(&upload)? {
            Some(verdict) => Ok(VerifiedUpload { upload, verdict }),
            None => Err(Error::Core(tenantkit_core::Error::NotFound)),
        }
    }

    /// The second step of completing an upload ([`Storage::verify_upload`] is the first):
    /// makes the verified upload a file in the caller's transaction `tx` (opened for
    /// [`TenantScope::of`] `principal`), with its audit entry, so that the app's own rows
    /// that refer to the file commit with it. An upload that was a file already answers that
    /// file. Until `tx` commits, the upload stays pending; a rollback leaves it so (completing
    /// it again verifies again), and the sweeper removes a copy of its object no row refers
    /// to.
    ///
    /// # Errors
    /// [`tenantkit_core::Error::Forbidden`] below member, [`tenantkit_core::Error::NotFound`]
    /// (a verified upload of another tenant, or one swept meanwhile),
    /// [`Error::UploadMismatch`] when a concurrent attempt rejected it meanwhile,
    /// [`Error::Config`] when `tx` is not `principal`'s scope.
    pub async fn complete(
        &self,
        tx: &mut TenantTx,
        principal: &Principal,
        client: &ClientInfo,
        verified: VerifiedUpload,
    ) -> Result<StoredFile> {
        acting(tx, principal, Permission::WriteContent)?;
        let VerifiedUpload { upload, verdict } = verified;
        if upload.tenant_id != tx.tenant_id() {
            return Err(Error::Core(tenantkit_core::Error::NotFound));
        }
        let file_id = match verdict {
            Verdict::Settled(file_id) => file_id,
            Verdict::Matches(pinned) => {
                match self.keep(tx, principal, client, &upload, &pinned).await? {
                    Some(file_id) => file_id,
                    None => {
                        // Another attempt settled it first (or the sweeper removed it): this
                        // attempt's copy is nobody's, whatever becomes of `tx`, so it goes now
                        // (a rollback would otherwise leave it to the sweeper).
                        if pinned.object() != upload.object_id {
                            self.forget(&pinned).await;
                        }
                        let upload = self
                            .find_upload(tx, upload.id)
                            .await?
                            .ok_or(Error::Core(tenantkit_core::Error::NotFound))?;
                        match settled(&upload)? {
                            Some(Verdict::Settled(file_id)) => file_id,
                            _ => return Err(Error::Core(tenantkit_core::Error::NotFound)),
                        }
                    }
                }
            }
        };
        self.file_row(tx, file_id)
            .await?
            .ok_or(Error::Core(tenantkit_core::Error::NotFound))
    }

    /// Both steps in one call, for an app with no rows of its own to write with the file:
    /// [`Storage::verify_upload`], then [`Storage::complete`] in a transaction of its own
    /// for [`TenantScope::of`] `principal`, committed.
    ///
    /// # Errors
    /// Those of [`Storage::verify_upload`] and [`Storage::complete`], database errors.
    pub async fn complete_upload(
        &self,
        principal: &Principal,
        client: &ClientInfo,
        id: UploadId,
    ) -> Result<StoredFile> {
        let verified = self.verify_upload(principal, client, id).await?;
        let mut tx = self.db.begin(&TenantScope::of(principal)).await?;
        let file = self.complete(&mut tx, principal, client, verified).await?;
        tx.commit().await?;
        Ok(file)
    }

    async fn current_upload(&self, scope: &TenantScope, id: UploadId) -> Result<Option<Upload>> {
        let mut tx = self.db.begin_read(scope).await?;
        let upload = self.find_upload(&mut tx, id).await?;
        tx.commit().await?;
        Ok(upload)
    }

    /// Makes the upload a file whose bytes are at `object`, if it is still pending: `None`
    /// when it is not (completed, rejected or swept meanwhile).
    async fn keep(
        &self,
        tx: &mut TenantTx,
        principal: &Principal,
        client: &ClientInfo,
        upload: &Upload,
        object: &ObjectKey,
    ) -> Result<Option<FileId>> {
        let file_id = FileId::new();
        let now = tenantkit_core::now();
        // The claim comes first and is conditional: it takes the row's lock (a concurrent
        // completion or rejection waits, then sees the new state), so exactly one attempt
        // settles the upload, and never one that another attempt already rejected.
        let claimed = with_conn!(&mut *tx, |c| {
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
            return Ok(None);
        }
        with_conn!(&mut *tx, |c| {
            sqlx::query(
                "INSERT INTO storage_files (id, tenant_id, upload_id, object_id, parent_id, \
                 filename, content_type, size, sha256, created_by, created_at) \
                 SELECT $1, u.tenant_id, u.id, $2, u.parent_id, u.filename, \
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
        Ok(Some(file_id))
    }

    /// Marks the upload rejected for `what`, if it is still pending, in a transaction of its
    /// own; `false` when it is not. Its objects are deleted only after this, by the caller.
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

/// What an upload that is no longer pending answers: its file, or its mismatch again (so a
/// retrying client learns what happened); `None` while it is pending.
fn settled(upload: &Upload) -> Result<Option<Verdict>> {
    if let Some(file_id) = upload.file_id {
        return Ok(Some(Verdict::Settled(file_id)));
    }
    if upload.state == "rejected" {
        return Err(Error::UploadMismatch(rejection_reason(
            upload.rejection.as_deref(),
        )));
    }
    Ok(None)
}
