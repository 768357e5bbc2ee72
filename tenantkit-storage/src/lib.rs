//! # tenantkit-storage
//!
//! Direct-to-storage uploads for multi-tenant services. Clients send file bytes straight to
//! the object store; the server only signs *intents* and verifies *results*. Nothing a client
//! sends chooses where a file lands (an [`ObjectKey`] is made from the tenant id and a server
//! id only), how big it is (the exact size is signed), or what type it is (the content type
//! and the SHA-256 are signed, and [`sniff`] checks the stored bytes against the declared type
//! before a file exists).
//!
//! - [`ObjectStore`]: the backend trait (sign an upload, sign a download, head, read a prefix,
//!   delete, list), with two implementations:
//!   - [`LocalStore`] (feature `local`, the embedded default): files under a folder, uploaded
//!     and downloaded through HMAC-signed, expiring URLs served by [`LocalStorageService`], a
//!     tower service that enforces the signed size, type and SHA-256 while streaming and
//!     commits with fsync and an atomic, create-only link;
//!   - [`S3Store`] (feature `s3`): presigned PUT (content type, exact length, checksum and
//!     `If-None-Match: *` signed) and a SigV4 browser POST policy, for AWS or any
//!     S3-compatible endpoint (path style for MinIO, SeaweedFS, R2).
//! - [`Storage`] (features `sqlite`/`postgres`): the upload lifecycle over this crate's own
//!   tables ([`migrations`]): intents under a per-tenant quota (pending uploads count, so
//!   parallel intents cannot overshoot), idempotent completion, files, signed downloads,
//!   deletion, and the [`Storage::sweep`] of expired uploads and orphans.
//!
//! ```
//! use tenantkit_core::TenantId;
//! use tenantkit_storage::{ObjectId, ObjectKey};
//!
//! let tenant = TenantId::new();
//! let key = ObjectKey::new(tenant, ObjectId::new());
//! assert!(key.as_str().starts_with(&format!("tenants/{tenant}/")));
//! assert_eq!(ObjectKey::parse(key.as_str()).unwrap(), key);
//! assert!(ObjectKey::parse("tenants/../../etc/passwd").is_err());
//! ```
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

mod disposition;
mod error;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod files;
mod key;
#[cfg(feature = "local")]
mod local;
#[cfg(feature = "s3")]
mod s3;
pub mod sniff;
mod store;

pub use error::{Error, Result};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use files::{
    FileId, FileParent, FixedQuota, Limits, NewUpload, QuotaSource, Storage, StoredFile,
    SweepReport, Sweeper, SweeperStats, Upload, UploadId, UploadTicket, migrations,
};
pub use key::{ObjectId, ObjectKey, Sha256, UploadIntent};
#[cfg(feature = "local")]
pub use local::{
    LocalBody, LocalStorageService, LocalStore, MAX_LOCAL_TOKEN_BYTES, TransferLimits,
};
#[cfg(feature = "s3")]
pub use s3::{S3Config, S3Store};
pub use store::{
    BoxFuture, ObjectInfo, ObjectMeta, ObjectStore, SignedDownload, SignedUpload, UploadMethod,
};
