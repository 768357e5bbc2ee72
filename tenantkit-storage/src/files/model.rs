//! What the upload lifecycle takes and answers: limits, quotas, intents, tickets, uploads,
//! files and sweep reports.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use tenantkit_core::{TenantId, TenantTx, UserId};

use super::{FileId, UploadId};
use crate::store::BoxFuture;
use crate::{ObjectId, Result, UploadMethod, sniff};

/// Where the tenant's storage quota comes from: one function, so a billing plan can set it.
pub trait QuotaSource: std::fmt::Debug + Send + Sync + 'static {
    /// The tenant's quota in bytes (`None`: unlimited), read inside the quota check's
    /// transaction.
    fn storage_quota<'a>(&'a self, tx: &'a mut TenantTx) -> BoxFuture<'a, Result<Option<u64>>>;
}

/// The same quota for every tenant.
#[derive(Debug, Clone, Copy)]
pub struct FixedQuota(pub Option<u64>);

impl QuotaSource for FixedQuota {
    fn storage_quota<'a>(&'a self, _: &'a mut TenantTx) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(std::future::ready(Ok(self.0)))
    }
}

/// The table files may hang off (through their `parent_id`): a tenant table of the app with a
/// `tenant_id` column and a UUID key column, both named by the app. A file with a parent is
/// visible exactly when its parent row is (in the same tenant and, for a
/// [team-restricted](FileParent::team_restricted) table, to the viewer); a file without one
/// is visible to the whole tenant. There is no foreign key: a file whose parent row is
/// deleted is seen by nobody (delete a row's files with it).
///
/// The names are constants of the app's code, checked as plain lowercase SQL identifiers when
/// the parent is made (lowercase: what an unquoted name means to PostgreSQL), and quoted where
/// they are spliced into SQL, so a reserved word such as `order` or `user` is a table name
/// like any other, and a name can never be input:
///
/// ```
/// use tenantkit_storage::FileParent;
///
/// let notes = FileParent::new("notes", "id").unwrap();
/// assert_eq!((notes.table(), notes.id_column()), ("notes", "id"));
/// // A table with `team_id` and `restricted` (the reference server's projects).
/// let projects = FileParent::new("projects", "id").unwrap().team_restricted();
/// assert!(projects.is_team_restricted());
/// assert!(FileParent::new("notes; DROP TABLE notes", "id").is_err());
/// assert!(FileParent::new("notes", "1d").is_err());
/// assert!(FileParent::new("Notes", "id").is_err()); // PostgreSQL would look for `notes`
/// assert!(FileParent::new("order", "id").is_ok()); // quoted in SQL
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileParent {
    table: &'static str,
    id_column: &'static str,
    team_restricted: bool,
}

/// The longest identifier PostgreSQL keeps whole.
const MAX_IDENTIFIER: usize = 63;

fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= MAX_IDENTIFIER
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl FileParent {
    /// Files hang off rows of `table` (which has a `tenant_id` column) keyed by `id_column`
    /// (a UUID), and are visible to the whole tenant while that row exists.
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) when a name is not a plain lowercase SQL
    /// identifier (ASCII lowercase letters, digits and `_`, not starting with a digit, at most
    /// 63 bytes).
    pub fn new(table: &'static str, id_column: &'static str) -> Result<Self> {
        for (what, name) in [("table", table), ("id column", id_column)] {
            if !is_identifier(name) {
                return Err(crate::Error::Config(format!(
                    "the file parent's {what} {name:?} is not a plain lowercase SQL identifier"
                )));
            }
        }
        Ok(Self {
            table,
            id_column,
            team_restricted: false,
        })
    }

    /// The table is also team-restricted ([`Visibility::Team`](tenantkit_core::Visibility::Team):
    /// it has `team_id` and `restricted`): a file of a restricted row is seen only by those
    /// who see the row (its team's members, admins and owners).
    #[must_use]
    pub fn team_restricted(mut self) -> Self {
        self.team_restricted = true;
        self
    }

    /// The parent table.
    pub fn table(&self) -> &'static str {
        self.table
    }

    /// The parent table's key column.
    pub fn id_column(&self) -> &'static str {
        self.id_column
    }

    /// Whether the parent table is team-restricted.
    pub fn is_team_restricted(&self) -> bool {
        self.team_restricted
    }

    /// `EXISTS (…)`: the row aliased `alias` has its parent in its tenant and, unless the
    /// transaction sees every team (`all`), its viewer (parameter `user`) sees the parent.
    pub(crate) fn exists(&self, alias: &str, all: bool, user: usize) -> String {
        format!(
            "EXISTS (SELECT 1 FROM \"{table}\" parent WHERE parent.tenant_id = {alias}.tenant_id \
             AND parent.\"{id}\" = {alias}.parent_id{team})",
            table = self.table,
            id = self.id_column,
            team = if self.has_parameters(all) {
                format!(" AND {}", tenantkit_core::team_visible("parent", user))
            } else {
                String::new()
            }
        )
    }

    /// Whether [`FileParent::exists`] has its viewer parameter.
    pub(crate) fn has_parameters(&self, all: bool) -> bool {
        self.team_restricted && !all
    }
}

/// An upload whose object was verified by [`Storage::verify_upload`](crate::Storage::verify_upload),
/// outside any transaction, ready to become a file in the caller's transaction with
/// [`Storage::complete`](crate::Storage::complete). Holds no connection; one that is dropped
/// instead leaves the upload pending (completing it again verifies again) and at most an
/// unreferenced copy of its object, which the sweeper removes.
#[derive(Debug)]
#[must_use = "complete it with Storage::complete in a transaction"]
pub struct VerifiedUpload {
    pub(crate) upload: Upload,
    pub(crate) verdict: Verdict,
}

impl VerifiedUpload {
    /// The upload.
    pub fn upload(&self) -> &Upload {
        &self.upload
    }
}

/// What the verification found.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// The upload is (already) this file.
    Settled(FileId),
    /// The object at this key is exactly what was declared.
    Matches(crate::ObjectKey),
}

/// A file deleted by [`Storage::delete_file`](crate::Storage::delete_file) in the caller's
/// transaction: once that transaction is committed, [`Storage::delete_object`](crate::Storage::delete_object)
/// deletes its bytes (otherwise, or if that fails, the sweeper does, as an orphan).
#[derive(Debug)]
#[must_use = "delete its object with Storage::delete_object after the commit"]
pub struct DeletedFile {
    pub(crate) file: StoredFile,
}

impl DeletedFile {
    /// The file as it was.
    pub fn file(&self) -> &StoredFile {
        &self.file
    }
}

/// Per-file limits and lifetimes.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest file, in bytes (default 100 MiB).
    pub max_file_bytes: u64,
    /// The media types that may be uploaded (default [`sniff::DEFAULT_ALLOWED`]); those in
    /// [`sniff::NEVER_ALLOWED`] are refused even when listed.
    pub allowed_types: Vec<String>,
    /// How long upload instructions stay valid (default 15 minutes).
    pub upload_ttl: Duration,
    /// How long a download URL stays valid (default 5 minutes).
    pub download_ttl: Duration,
    /// How long past its expiry a pending upload, or an object with no row, is kept before
    /// the sweeper removes it (default 1 hour).
    pub sweep_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_bytes: 100 * 1024 * 1024,
            allowed_types: sniff::DEFAULT_ALLOWED
                .iter()
                .map(|&t| t.to_owned())
                .collect(),
            upload_ttl: Duration::minutes(15),
            download_ttl: Duration::minutes(5),
            sweep_grace: Duration::hours(1),
        }
    }
}

/// What a client asks to upload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewUpload {
    /// The name to offer on download (1 to 255 characters, no control characters or `/`).
    pub filename: String,
    /// The media type (`type/subtype`, lowercase, no parameters; one of the allowed types).
    pub content_type: String,
    /// The exact size in bytes.
    pub size: u64,
    /// The SHA-256 of the bytes, 64 hex digits.
    pub sha256: String,
    /// The row of the app's [`FileParent`] table the file belongs to (none: the tenant's).
    #[serde(default)]
    pub parent_id: Option<Uuid>,
    /// `PUT` (default) or `POST` (a browser form; stores that support it).
    #[serde(default)]
    pub method: Option<UploadMethod>,
}

/// The answer to an upload intent: where and how to send the bytes.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UploadTicket {
    /// The upload's id (complete it with this).
    pub id: UploadId,
    /// `PUT` or `POST`.
    pub method: UploadMethod,
    /// Where to send it.
    pub url: String,
    /// The headers to send exactly (PUT).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    /// The form fields to send before `file` (POST), as an object in field order.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub fields: Option<serde_json::Map<String, serde_json::Value>>,
    /// When the instructions stop working.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// A pending or completed upload.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Upload {
    /// Its id.
    pub id: UploadId,
    /// The owning tenant.
    pub tenant_id: TenantId,
    /// The object it writes.
    pub object_id: ObjectId,
    /// The row of the [`FileParent`] table it belongs to.
    pub parent_id: Option<Uuid>,
    /// The declared file name.
    pub filename: String,
    /// The declared type.
    pub content_type: String,
    /// The declared size.
    pub size: i64,
    /// The declared SHA-256.
    pub sha256: Vec<u8>,
    /// Who asked.
    pub created_by: Option<UserId>,
    /// When the instructions expire.
    pub expires_at: OffsetDateTime,
    /// `pending`, `completed` or `rejected` (its object was not what was declared).
    pub state: String,
    /// The file it became.
    pub file_id: Option<FileId>,
    /// What differed, for a rejected upload (`size`, `content type`, `sha256`, `content`).
    pub rejection: Option<String>,
}

/// A stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StoredFile {
    /// Its id.
    pub id: FileId,
    /// The owning tenant (not sent to clients).
    #[serde(skip)]
    pub tenant_id: TenantId,
    /// The object holding its bytes (not sent to clients).
    #[serde(skip)]
    pub object_id: ObjectId,
    /// The file name offered on download.
    pub filename: String,
    /// Its media type (verified against its bytes).
    pub content_type: String,
    /// Its size in bytes.
    pub size: i64,
    /// Its SHA-256, hex.
    #[serde(serialize_with = "hex_bytes")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub sha256: Vec<u8>,
    /// The row of the [`FileParent`] table it belongs to.
    pub parent_id: Option<Uuid>,
    /// Who uploaded it.
    pub created_by: Option<UserId>,
    /// When it became a file.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// A signed download URL (only when one file is read).
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_url: Option<String>,
    /// When `download_url` expires.
    #[sqlx(skip)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub download_expires_at: Option<OffsetDateTime>,
}

fn hex_bytes<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::key::hex(bytes))
}

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Expired pending (and rejected) uploads removed (with their objects).
    pub expired_uploads: u64,
    /// Objects with no upload or file row removed.
    pub orphans: u64,
}
