//! Deletion: a file, or every file of a parent row, in the caller's transaction; the bytes
//! once that is committed.

use tenantkit_core::{ClientInfo, Permission, Principal, TenantTx, with_conn};
use uuid::Uuid;

use super::{FILE_COLUMNS, Storage, acting};
use crate::{DeletedFile, Error, FileId, ObjectId, ObjectKey, Result, StoredFile};

impl Storage {
    /// Deletes a file's rows in the caller's transaction `tx` (opened for
    /// [`TenantScope::of`](tenantkit_core::TenantScope::of) `principal`), with its audit entry. Its bytes stay until the caller
    /// has committed and passed the answer to [`Storage::delete_object`]; a rollback keeps the
    /// file whole.
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # async fn demo(storage: &tenantkit_storage::Storage, db: &tenantkit_core::Database,
    /// #     caller: &tenantkit_core::Principal, client: &tenantkit_core::ClientInfo,
    /// #     id: tenantkit_storage::FileId) -> tenantkit_storage::Result<()> {
    /// let mut tx = db.begin(&tenantkit_core::TenantScope::of(caller)).await?;
    /// let deleted = storage.delete_file(&mut tx, caller, client, id).await?;
    /// tx.commit().await?;
    /// storage.delete_object(deleted).await;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`tenantkit_core::Error::Forbidden`] below member, [`tenantkit_core::Error::NotFound`],
    /// [`Error::Config`] when `tx` is not `principal`'s scope.
    pub async fn delete_file(
        &self,
        tx: &mut TenantTx,
        principal: &Principal,
        client: &ClientInfo,
        id: FileId,
    ) -> Result<DeletedFile> {
        acting(tx, principal, Permission::WriteContent)?;
        let file = self
            .file_row(tx, id)
            .await?
            .ok_or(Error::Core(tenantkit_core::Error::NotFound))?;
        let details = serde_json::json!({ "size": file.size });
        delete_rows(tx, Rows::File(id)).await?;
        audit_deleted(tx, principal, client, &file, details).await?;
        Ok(DeletedFile { file })
    }

    /// Deletes every file of the parent row `parent` (and its uploads still pending) in the
    /// caller's transaction `tx` (opened for [`TenantScope::of`](tenantkit_core::TenantScope::of) `principal`), with an audit
    /// entry per file: call it in the transaction that deletes the parent row, **before**
    /// deleting it (the parent must still be there, and visible to the caller). A file whose
    /// parent is gone is seen by nobody but still counts in the tenant's quota, so an app
    /// that deletes parents calls this. After the commit, pass the answer to
    /// [`Storage::delete_objects`]; a rollback keeps every file whole.
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # async fn demo(storage: &tenantkit_storage::Storage, db: &tenantkit_core::Database,
    /// #     caller: &tenantkit_core::Principal, client: &tenantkit_core::ClientInfo,
    /// #     note: uuid::Uuid) -> tenantkit_storage::Result<()> {
    /// let mut tx = db.begin(&tenantkit_core::TenantScope::of(caller)).await?;
    /// let deleted = storage.delete_files_of(&mut tx, caller, client, note).await?;
    /// // … DELETE the note itself …
    /// tx.commit().await?;
    /// storage.delete_objects(deleted).await;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`tenantkit_core::Error::Forbidden`] below member, [`tenantkit_core::Error::NotFound`]
    /// when the parent is not there or the caller cannot see it, a validation error without a
    /// [`FileParent`](crate::FileParent) configured, [`Error::Config`] when `tx` is not `principal`'s scope.
    pub async fn delete_files_of(
        &self,
        tx: &mut TenantTx,
        principal: &Principal,
        client: &ClientInfo,
        parent: Uuid,
    ) -> Result<Vec<DeletedFile>> {
        acting(tx, principal, Permission::WriteContent)?;
        self.check_parent(tx, parent).await?;
        let tenant = tx.tenant_id();
        let select = format!(
            "SELECT {FILE_COLUMNS} FROM storage_files WHERE tenant_id = $1 AND parent_id = $2 \
             ORDER BY id"
        );
        let files: Vec<StoredFile> = with_conn!(&mut *tx, |c| {
            sqlx::query_as(&select)
                .bind(tenant)
                .bind(parent)
                .fetch_all(c)
                .await
        })?;
        delete_rows(tx, Rows::Parent(parent)).await?;
        for file in &files {
            let details = serde_json::json!({ "size": file.size, "parent_id": parent });
            audit_deleted(tx, principal, client, file, details).await?;
        }
        Ok(files.into_iter().map(|file| DeletedFile { file }).collect())
    }

    /// [`Storage::delete_object`] for each file, as [`Storage::delete_files_of`] answers them.
    pub async fn delete_objects(&self, deleted: impl IntoIterator<Item = DeletedFile>) {
        for file in deleted {
            self.delete_object(file).await;
        }
    }

    /// Deletes the bytes of a file whose deletion ([`Storage::delete_file`]) was committed.
    /// Only once no file refers to them (checked in a transaction of its own, so call it after
    /// the caller's transaction has ended): called before the commit, or after a rollback, it
    /// keeps them. A failure is logged, never returned: the object is then an orphan the
    /// sweeper removes.
    pub async fn delete_object(&self, deleted: DeletedFile) {
        let file = deleted.file;
        let key = ObjectKey::new(file.tenant_id, file.object_id);
        match self.object_is_a_file(file.object_id).await {
            Ok(false) => {
                if let Err(err) = self.store.delete(&key).await {
                    tracing::warn!(error = %err, "object of a deleted file not deleted; the sweeper will");
                }
            }
            Ok(true) => tracing::warn!(
                file = %file.id,
                "object of a deleted file kept: its file is still there (not committed, or rolled back)"
            ),
            Err(err) => {
                tracing::warn!(error = %err, "object of a deleted file not deleted; the sweeper will");
            }
        }
    }

    /// Whether a committed file refers to `object`.
    async fn object_is_a_file(&self, object: ObjectId) -> Result<bool> {
        let mut tx = self.db.begin_system_read().await?;
        let found: Option<i32> = with_conn!(&mut tx, |c| {
            sqlx::query_scalar("SELECT 1 FROM storage_files WHERE object_id = $1")
                .bind(object)
                .fetch_optional(c)
                .await
        })?;
        tx.commit().await?;
        Ok(found.is_some())
    }
}

/// Which file rows a deletion takes, with the uploads that go with them.
#[derive(Clone, Copy)]
enum Rows {
    /// One file, and the upload it was completed from.
    File(FileId),
    /// Every file of a parent row, and its uploads (pending ones included).
    Parent(Uuid),
}

/// Deletes the file rows `rows` of the transaction's tenant and their uploads.
async fn delete_rows(tx: &mut TenantTx, rows: Rows) -> Result<()> {
    let tenant = tx.tenant_id();
    let ((files, uploads), key) = match rows {
        Rows::File(id) => (("id", "file_id"), id.into()),
        Rows::Parent(parent) => (("parent_id", "parent_id"), parent),
    };
    let (files, uploads) = (
        format!("DELETE FROM storage_files WHERE tenant_id = $1 AND {files} = $2"),
        format!("DELETE FROM storage_uploads WHERE tenant_id = $1 AND {uploads} = $2"),
    );
    Ok(with_conn!(tx, |c| {
        sqlx::query(&files)
            .bind(tenant)
            .bind(key)
            .execute(&mut *c)
            .await?;
        sqlx::query(&uploads)
            .bind(tenant)
            .bind(key)
            .execute(c)
            .await
            .map(drop)
    })?)
}

/// The audit entry of a deleted file.
async fn audit_deleted(
    tx: &mut TenantTx,
    principal: &Principal,
    client: &ClientInfo,
    file: &StoredFile,
    details: serde_json::Value,
) -> Result<()> {
    let event = client.event("file.deleted", Some(principal.user_id()));
    tx.audit(event.target("file", file.id).details(details))
        .await?;
    Ok(())
}
