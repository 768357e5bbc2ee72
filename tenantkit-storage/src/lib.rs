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
//!   tables ([`migrations`]), in the caller's transactions: intents under a per-tenant quota
//!   (pending uploads count, so parallel intents cannot overshoot), idempotent completion,
//!   files (optionally hanging off rows of an app table, [`FileParent`]), signed downloads,
//!   deletion, and the [`Storage::sweep`] of expired uploads and orphans ([`Sweeper`]).
//! - `axum` (feature): `IntoResponse` for [`Error`] and the local store's routes.
//!
//! ## Guide: an upload in your own transaction
//!
//! Your server makes one [`Storage`] from its [`Database`](tenantkit_core::Database)
//! (migrated with this crate's [`migrations`]) and a store, and says which of its tables
//! files may hang off ([`FileParent`]). Every call that writes takes the caller's
//! [`TenantTx`](tenantkit_core::TenantTx), so an upload, a completion or a deletion commits
//! with the app's own rows, or not at all. Completing is two steps, so that no transaction is
//! held while the object store is read: [`Storage::verify_upload`] outside any transaction,
//! then [`Storage::complete`] in the caller's. Reads ([`Storage::file`], [`Storage::files`])
//! take the caller's transaction too. The signed URLs of a [`LocalStore`] are answered by
//! [`LocalStorageService`], mountable with the `axum` feature's
//! `tenantkit_storage::axum::local_routes`.
//!
#![cfg_attr(
    all(feature = "local", feature = "sqlite"),
    doc = r##"
```
use std::sync::Arc;
use tenantkit_core::{Database, Email, Migrations, NewTenant, NewUser, Principal, Role,
    SessionId, TenantScope};
use tenantkit_storage::{FileParent, LocalStore, NewUpload, Sha256, Storage};

# #[tokio::main(flavor = "current_thread")]
# async fn main() -> Result<(), Box<dyn std::error::Error>> {
let db = Database::connect("sqlite::memory:").await?;
db.migrate(&Migrations::new().with(tenantkit_storage::migrations())).await?;
# let dir = tempfile::tempdir()?;
// Files under a folder, sent to and fetched from URLs signed with a 32-byte secret.
let store = LocalStore::new(dir.path(), "https://api.example/files", &[7u8; 32])?;
let storage = Storage::new(db.clone(), Arc::new(store))
    // Files may belong to rows of the app's `notes` table (keyed by `id`).
    .with_parent(FileParent::new("notes", "id")?);
# let (tenant, mut tx) = db.create_tenant(NewTenant { name: "Acme".into(), slug: None }).await?;
# let user = tx.create_user(NewUser { email: Email::parse("ada@example.com")?, password_hash: None }).await?;
# tx.add_member(user.id, Role::Member).await?;
# tx.commit().await?;
// In a server the auth layer builds the caller from a verified token.
let caller = Principal::new(user.id, tenant.id, Role::Member, [], SessionId::new());

let bytes = b"hello".to_vec();
let mut tx = db.begin(&TenantScope::of(&caller)).await?;
let ticket = storage
    .create_upload(&mut tx, &caller, NewUpload {
        filename: "hello.txt".into(),
        content_type: "text/plain".into(),
        size: bytes.len() as u64,
        sha256: Sha256::of(&bytes).to_hex(),
        parent_id: None, // or the id of a note the caller can see
        method: None,    // PUT
    })
    .await?;
// … the app's own rows, in the same transaction …
tx.commit().await?; // nothing is stored before this
assert!(ticket.url.starts_with("https://api.example/files/upload/"));
// The client PUTs the bytes to `ticket.url` with `ticket.headers`, then asks the server to
// complete the upload: `storage.verify_upload(..)`, then `storage.complete(&mut tx, ..)`.
# let _ = ticket.id;
# Ok(())
# }
```
"##
)]
//!
//! Object keys are made from ids only, never from anything a client sends:
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

#[cfg(feature = "axum")]
pub mod axum;
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
    DeletedFile, FileId, FileParent, FixedQuota, Limits, NewUpload, QuotaSource, Storage,
    StoredFile, SweepReport, Sweeper, SweeperStats, Upload, UploadId, UploadTicket, VerifiedUpload,
    migrations,
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
