//! The upload lifecycle over this crate's tables: intents under a quota, completion that
//! verifies what was stored, files, signed downloads, deletion and the sweeper.

use std::sync::Arc;

use uuid::Uuid;

use tenantkit_core::{
    Database, MigrationSet, Page, PageRequest, Permission, Principal, TenantId, TenantScope,
    TenantTx, with_conn,
};

use crate::store::{ObjectStore, SignedUpload};
use crate::{Error, ObjectId, ObjectKey, Result, Sha256, UploadIntent, UploadMethod, sniff};

mod complete;
mod delete;
mod model;
mod sweep;

pub use sweep::{Sweeper, SweeperStats};

pub use model::*;

tenantkit_core::define_id!(
    /// Identifies a pending (or completed) upload.
    UploadId, "upload id"
);
tenantkit_core::define_id!(
    /// Identifies a stored file.
    FileId, "file id"
);

/// This crate's migrations (versions 3000 and up): `storage_uploads`, `storage_files`,
/// `storage_usage`, behind row-level security on PostgreSQL.
pub fn migrations() -> MigrationSet {
    tenantkit_core::migration_set!("tenantkit-storage")
}

/// The upload lifecycle of one server: database, object store, limits and quota.
#[derive(Debug, Clone)]
pub struct Storage {
    db: Database,
    store: Arc<dyn ObjectStore>,
    limits: Arc<Limits>,
    quota: Arc<dyn QuotaSource>,
    parent: Option<FileParent>,
}

const UPLOAD_COLUMNS: &str = "id, tenant_id, object_id, parent_id, filename, content_type, \
                              size, sha256, created_by, expires_at, state, file_id, rejection";
const FILE_COLUMNS: &str = "id, tenant_id, object_id, filename, content_type, size, sha256, \
                            parent_id, created_by, created_at";
const FILENAME_MAX: usize = 255;

impl Storage {
    /// The lifecycle over `db` (migrated with [`migrations`]) and `store`.
    pub fn new(db: Database, store: Arc<dyn ObjectStore>) -> Self {
        Self {
            db,
            store,
            limits: Arc::new(Limits::default()),
            quota: Arc::new(FixedQuota(None)),
            parent: None,
        }
    }

    /// Replaces the limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = Arc::new(limits);
        self
    }

    /// Replaces where quotas come from.
    pub fn with_quota(mut self, quota: Arc<dyn QuotaSource>) -> Self {
        self.quota = quota;
        self
    }

    /// Lets files belong to rows of `parent` (through [`NewUpload::parent_id`]) and share
    /// their visibility. Without one, a `parent_id` is refused as invalid.
    pub fn with_parent(mut self, parent: FileParent) -> Self {
        self.parent = Some(parent);
        self
    }

    /// The object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// ` AND (<alias>.parent_id IS NULL OR <the parent exists and is visible>)`, its
    /// parameter (for a team-restricted parent, unless the transaction sees every team,
    /// `all`) numbered `user`.
    fn visible(&self, alias: &str, all: bool, user: usize) -> String {
        match self.parent {
            None => format!(" AND {alias}.parent_id IS NULL"),
            Some(parent) => format!(
                " AND ({alias}.parent_id IS NULL OR {})",
                parent.exists(alias, all, user)
            ),
        }
    }

    fn has_visibility_parameters(&self, all: bool) -> bool {
        self.parent.is_some_and(|parent| parent.has_parameters(all))
    }

    fn validate(&self, new: &NewUpload) -> Result<(UploadIntent, UploadMethod)> {
        let mut errors = Vec::new();
        let filename = new.filename.trim();
        if filename.is_empty() || filename.chars().count() > FILENAME_MAX {
            errors.push(tenantkit_core::FieldError::new(
                "filename",
                "must be 1 to 255 characters",
            ));
        } else if filename
            .chars()
            .any(|c| c.is_control() || matches!(c, '/' | '\\'))
        {
            errors.push(tenantkit_core::FieldError::new(
                "filename",
                "must not contain control characters or slashes",
            ));
        }
        let content_type = new.content_type.as_str();
        let well_formed = content_type.len() <= 127
            && content_type.split_once('/').is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && content_type.bytes().all(|c| {
                        c.is_ascii_lowercase()
                            || c.is_ascii_digit()
                            || matches!(c, b'/' | b'.' | b'+' | b'-')
                    })
            });
        if !well_formed {
            errors.push(tenantkit_core::FieldError::new(
                "content_type",
                "must be a lowercase type/subtype without parameters",
            ));
        } else if sniff::NEVER_ALLOWED.contains(&content_type)
            || !self.limits.allowed_types.iter().any(|t| t == content_type)
        {
            errors.push(tenantkit_core::FieldError::new(
                "content_type",
                "is not an allowed type",
            ));
        }
        if new.size == 0 {
            errors.push(tenantkit_core::FieldError::new(
                "size",
                "must be at least 1",
            ));
        } else if new.size > self.limits.max_file_bytes {
            errors.push(tenantkit_core::FieldError::new(
                "size",
                format!("must be at most {} bytes", self.limits.max_file_bytes),
            ));
        }
        let sha256 = match Sha256::from_hex(&new.sha256) {
            Ok(sha) => Some(sha),
            Err(_) => {
                errors.push(tenantkit_core::FieldError::new(
                    "sha256",
                    "must be 64 hex digits",
                ));
                None
            }
        };
        let method = new.method.unwrap_or(UploadMethod::Put);
        if !self.store.methods().contains(&method) {
            errors.push(tenantkit_core::FieldError::new(
                "method",
                "is not supported by this server's storage",
            ));
        }
        if !errors.is_empty() {
            return Err(Error::Core(tenantkit_core::Error::Validation(errors)));
        }
        match sha256 {
            Some(sha256) => Ok((
                UploadIntent {
                    filename: filename.to_owned(),
                    content_type: content_type.to_owned(),
                    size: new.size,
                    sha256,
                },
                method,
            )),
            None => Err(Error::invalid("body", "invalid")),
        }
    }

    /// Records a pending upload in the caller's transaction `tx` and signs its instructions.
    /// `tx` is the caller's tenant's, opened for [`TenantScope::of`] `principal` (as
    /// `tenantkit_core::axum::TenantWrite` opens it).
    ///
    /// The instructions are signed before anything is written, and nothing is stored until
    /// the caller commits `tx`: the app writes its own row (an attachment of a note, say) in
    /// the same transaction, and a rollback stores nothing. Instructions whose upload was
    /// rolled back lead nowhere: the upload cannot be completed, and the sweeper removes any
    /// object sent to them.
    ///
    /// The quota counts stored files and every pending upload, checked under a per-tenant
    /// lock (the tenant's `storage_usage` row, written first) that `tx` holds until it ends,
    /// so parallel intents cannot together overshoot it: commit soon after, and do no slow
    /// work (network calls, hashing) between this call and the commit, since every other
    /// intent of the tenant waits for it. On PostgreSQL, where the app's own rows are locked
    /// row by row, take them in one order across handlers (for example: the app's row first,
    /// then this call, as `examples/notes` does), or two transactions that lock them in
    /// opposite orders deadlock and one fails. On SQLite the write transaction already
    /// serialises every writer.
    ///
    /// # Errors
    /// [`tenantkit_core::Error::Forbidden`] below member, validation errors (a `parent_id`
    /// without a [`FileParent`] configured is one), [`tenantkit_core::Error::NotFound`] for a
    /// parent the caller cannot see (or of another tenant), [`Error::QuotaExceeded`],
    /// [`Error::Config`] when `tx` is not `principal`'s scope.
    pub async fn create_upload(
        &self,
        tx: &mut TenantTx,
        principal: &Principal,
        new: NewUpload,
    ) -> Result<UploadTicket> {
        acting(tx, principal, Permission::WriteContent)?;
        let (intent, method) = self.validate(&new)?;
        let tenant = tx.tenant_id();
        let upload_id = UploadId::new();
        let object_id = ObjectId::new();
        let key = ObjectKey::new(tenant, object_id);
        let now = tenantkit_core::now();
        // Signed before anything is written: a failure writes nothing.
        let signed = self
            .store
            .sign_upload(&key, &intent, method, now, self.limits.upload_ttl)
            .await?;
        if let Some(parent) = new.parent_id {
            self.check_parent(tx, parent).await?;
        }
        // The lock: one row per tenant, written first, held to commit.
        with_conn!(&mut *tx, |c| {
            sqlx::query(
                "INSERT INTO storage_usage (tenant_id, intents) VALUES ($1, 1) \
                 ON CONFLICT (tenant_id) DO UPDATE SET intents = storage_usage.intents + 1",
            )
            .bind(tenant)
            .execute(c)
            .await
            .map(drop)
        })?;
        let quota = self.quota.storage_quota(tx).await?;
        if let Some(quota) = quota {
            let used = usage(tx, tenant).await?;
            if used.saturating_add(intent.size) > quota {
                return Err(Error::QuotaExceeded);
            }
        }
        let size = i64::try_from(intent.size).map_err(|_| Error::invalid("size", "too large"))?;
        with_conn!(&mut *tx, |c| {
            sqlx::query(
                "INSERT INTO storage_uploads (id, tenant_id, object_id, parent_id, filename, \
                 content_type, size, sha256, method, created_by, created_at, expires_at, state) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'pending')",
            )
            .bind(upload_id)
            .bind(tenant)
            .bind(object_id)
            .bind(new.parent_id)
            .bind(&intent.filename)
            .bind(&intent.content_type)
            .bind(size)
            .bind(intent.sha256.0.to_vec())
            .bind(match method {
                UploadMethod::Put => "PUT",
                UploadMethod::Post => "POST",
            })
            .bind(principal.user_id())
            .bind(now)
            .bind(signed.expires_at)
            .execute(c)
            .await
            .map(drop)
        })?;
        Ok(ticket(upload_id, signed))
    }

    /// `Ok` when the row `id` of the parent table is in the transaction's tenant and visible
    /// to it.
    async fn check_parent(&self, tx: &mut TenantTx, id: Uuid) -> Result<()> {
        let Some(parent) = self.parent else {
            return Err(Error::invalid(
                "parent_id",
                "files cannot belong to a parent record here",
            ));
        };
        let (tenant, all, viewer) = (tx.tenant_id(), tx.sees_all_teams(), tx.viewer());
        let sql = format!(
            "SELECT 1 FROM \"{}\" parent WHERE parent.tenant_id = $1 AND parent.\"{}\" = $2{}",
            parent.table(),
            parent.id_column(),
            if parent.has_parameters(all) {
                format!(" AND {}", tenantkit_core::team_visible("parent", 3))
            } else {
                String::new()
            }
        );
        let with = parent.has_parameters(all);
        let found: Option<i32> = with_conn!(tx, |c| {
            let query = sqlx::query_scalar(&sql).bind(tenant).bind(id);
            let query = if with { query.bind(viewer) } else { query };
            query.fetch_optional(c).await
        })?;
        match found {
            Some(_) => Ok(()),
            None => Err(Error::Core(tenantkit_core::Error::NotFound)),
        }
    }

    /// The row `id` of `table` (aliased `alias`, `columns` its row type's) in the
    /// transaction's tenant, if the caller may see it (the parent's visibility).
    async fn visible_row<R: tenantkit_core::Row>(
        &self,
        tx: &mut TenantTx,
        (table, alias, columns): (&str, &str, &str),
        id: Uuid,
    ) -> Result<Option<R>> {
        let (tenant, all, viewer) = (tx.tenant_id(), tx.sees_all_teams(), tx.viewer());
        let sql = format!(
            "SELECT {columns} FROM {table} {alias} WHERE {alias}.tenant_id = $1 AND {alias}.id = $2{}",
            self.visible(alias, all, 3)
        );
        let with = self.has_visibility_parameters(all);
        Ok(with_conn!(tx, |c| {
            let query = sqlx::query_as(&sql).bind(tenant).bind(id);
            let query = if with { query.bind(viewer) } else { query };
            query.fetch_optional(c).await
        })?)
    }

    async fn find_upload(&self, tx: &mut TenantTx, id: UploadId) -> Result<Option<Upload>> {
        self.visible_row(tx, ("storage_uploads", "u", UPLOAD_COLUMNS), id.into())
            .await
    }

    async fn file_row(&self, tx: &mut TenantTx, id: FileId) -> Result<Option<StoredFile>> {
        self.visible_row(tx, ("storage_files", "f", FILE_COLUMNS), id.into())
            .await
    }

    /// One file with a signed download URL, read in the caller's transaction `tx` (opened
    /// for [`TenantScope::of`] `principal`; a read-only one will do).
    ///
    /// # Errors
    /// [`tenantkit_core::Error::NotFound`] (also another tenant's id, or a file whose parent
    /// the caller cannot see), [`Error::Config`] when `tx` is not `principal`'s scope.
    pub async fn file(
        &self,
        tx: &mut TenantTx,
        principal: &Principal,
        id: FileId,
    ) -> Result<StoredFile> {
        acting(tx, principal, Permission::Read)?;
        let mut file = self
            .file_row(tx, id)
            .await?
            .ok_or(Error::Core(tenantkit_core::Error::NotFound))?;
        let key = ObjectKey::new(file.tenant_id, file.object_id);
        let download = self
            .store
            .sign_download(
                &key,
                &file.filename,
                &file.content_type,
                tenantkit_core::now(),
                self.limits.download_ttl,
            )
            .await?;
        file.download_url = Some(download.url);
        file.download_expires_at = Some(download.expires_at);
        Ok(file)
    }

    /// The files the caller may see, newest id last, in keyset pages; only those of the
    /// parent row `parent` when given. Read in the caller's transaction `tx` (opened for
    /// [`TenantScope::of`] `principal`; a read-only one will do).
    ///
    /// # Errors
    /// Database errors, [`Error::Config`] when `tx` is not `principal`'s scope.
    pub async fn files(
        &self,
        tx: &mut TenantTx,
        principal: &Principal,
        parent: Option<Uuid>,
        page: PageRequest,
    ) -> Result<Page<StoredFile>> {
        acting(tx, principal, Permission::Read)?;
        let (tenant, all, viewer) = (tx.tenant_id(), tx.sees_all_teams(), tx.viewer());
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM storage_files f WHERE f.tenant_id = $1 AND f.id > $2 \
             AND ($3 IS NULL OR f.parent_id = $3){} ORDER BY f.id LIMIT $4",
            self.visible("f", all, 5)
        );
        let with = self.has_visibility_parameters(all);
        let (after, fetch) = (page.after_key(), page.fetch_count());
        let rows: Vec<StoredFile> = with_conn!(tx, |c| {
            let query = sqlx::query_as(&sql)
                .bind(tenant)
                .bind(after)
                .bind(parent)
                .bind(fetch);
            let query = if with { query.bind(viewer) } else { query };
            query.fetch_all(c).await
        })?;
        Ok(Page::from_rows(rows, &page, |f| f.id.into()))
    }
}

/// `Ok` when `principal` may do `permission` and `tx` is `principal`'s own scope (its tenant,
/// and what it may see of it).
fn acting(tx: &TenantTx, principal: &Principal, permission: Permission) -> Result<()> {
    principal.require(permission)?;
    if *tx.scope() != TenantScope::of(principal) {
        return Err(Error::Config(
            "a storage call's transaction must be opened for TenantScope::of(principal)".into(),
        ));
    }
    Ok(())
}

/// Bytes of the tenant's files plus every pending upload.
async fn usage(tx: &mut TenantTx, tenant: TenantId) -> Result<u64> {
    let used: i64 = with_conn!(tx, |c| {
        sqlx::query_scalar(
            "SELECT CAST((SELECT COALESCE(SUM(size), 0) FROM storage_files WHERE tenant_id = $1) \
             + (SELECT COALESCE(SUM(size), 0) FROM storage_uploads \
                WHERE tenant_id = $1 AND state = 'pending') AS BIGINT)",
        )
        .bind(tenant)
        .fetch_one(c)
        .await
    })?;
    Ok(u64::try_from(used).unwrap_or(0))
}

fn ticket(id: UploadId, signed: SignedUpload) -> UploadTicket {
    let (headers, fields) = match signed.method {
        UploadMethod::Put => (Some(signed.headers), None),
        UploadMethod::Post => (
            None,
            Some(
                signed
                    .fields
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect(),
            ),
        ),
    };
    UploadTicket {
        id,
        method: signed.method,
        url: signed.url,
        headers,
        fields,
        expires_at: signed.expires_at,
    }
}
