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

/// Files may hang off rows of this team-restricted table ([`Visibility::Team`](tenantkit_core::Visibility::Team): `id`,
/// `tenant_id`, `team_id`, `restricted`), through `project_id`, and are then visible exactly
/// when that row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileParent {
    /// The table (a constant of your code, never input).
    pub table: &'static str,
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
    /// The project (a record of the [`FileParent`] table) the file belongs to.
    #[serde(default)]
    pub project_id: Option<Uuid>,
    /// `PUT` (default) or `POST` (a browser form; stores that support it).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub method: Option<String>,
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
    /// The project it belongs to.
    pub project_id: Option<Uuid>,
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
    /// The project it belongs to.
    pub project_id: Option<Uuid>,
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
