//! The crate's error type and its HTTP mapping.

use tenantkit_core::{ErrorCode, Problem};

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in tenantkit-storage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A core error (not found, forbidden, validation, database).
    #[error(transparent)]
    Core(#[from] tenantkit_core::Error),
    /// The tenant's storage quota (files and pending uploads) would be exceeded.
    #[error("storage quota exceeded")]
    QuotaExceeded,
    /// An upload was completed before its object reached the store.
    #[error("nothing was uploaded yet")]
    UploadIncomplete,
    /// An upload was completed after its instructions expired: it can never become a file
    /// (ask for a new upload). Answered as `upload_incomplete`.
    #[error("the upload expired")]
    UploadExpired,
    /// The stored object differs from the upload's intent; it was deleted, and completing the
    /// upload again answers this again. The message says which property differed and is safe
    /// to show.
    #[error("upload mismatch: {0}")]
    UploadMismatch(&'static str),
    /// A signed URL is malformed, tampered with, or for another operation.
    #[error("invalid signed url")]
    BadSignature,
    /// A signed URL has expired.
    #[error("signed url expired")]
    Expired,
    /// The upload body broke the signed intent (size, type, checksum); nothing was kept. The
    /// message is safe to show.
    #[error("upload refused: {0}")]
    Refused(&'static str),
    /// The body is larger than the signed size.
    #[error("upload larger than signed")]
    TooLarge,
    /// The object was already uploaded (uploads are create-only).
    #[error("object already exists")]
    AlreadyExists,
    /// Another upload to the same signed URL is still being received: at most one is in
    /// flight per upload, so parallel bodies cannot each fill the disk up to the signed size.
    #[error("an upload to this url is in progress")]
    UploadInProgress,
    /// The body stopped arriving (no data within the idle timeout) or arrived below the
    /// minimum rate; nothing was kept.
    #[error("the body arrived too slowly")]
    TooSlow,
    /// The object store failed or is unreachable. Never shown to clients.
    #[error("object store error: {0}")]
    Store(String),
    /// The configuration is unusable.
    #[error("configuration error: {0}")]
    Config(String),
}

impl Error {
    /// A validation error about one field.
    pub fn invalid(field: &str, message: &str) -> Self {
        Error::Core(tenantkit_core::Error::invalid(field, message))
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        Error::Core(err.into())
    }
}

impl From<&Error> for Problem {
    /// The one mapping from storage errors to HTTP answers. Store and configuration errors
    /// are logged here and answered with a generic 500/503 body.
    fn from(err: &Error) -> Self {
        match err {
            Error::Core(core) => Problem::from(core),
            Error::QuotaExceeded => Problem::new(
                ErrorCode::QuotaExceeded,
                "The tenant's storage quota (stored files and pending uploads) would be exceeded.",
            ),
            Error::UploadIncomplete => Problem::new(
                ErrorCode::UploadIncomplete,
                "Nothing has been uploaded for this upload yet.",
            ),
            Error::UploadExpired => Problem::new(
                ErrorCode::UploadIncomplete,
                "The upload expired before it was completed; ask for a new upload.",
            ),
            Error::UploadMismatch(what) => Problem::new(
                ErrorCode::UploadMismatch,
                format!("The uploaded object does not match the upload ({what}); it was deleted."),
            ),
            Error::BadSignature => Problem::new(ErrorCode::Forbidden, "The signed URL is invalid."),
            Error::Expired => Problem::new(ErrorCode::Forbidden, "The signed URL has expired."),
            Error::Refused(why) => Problem::new(
                ErrorCode::BadRequest,
                format!("The upload was refused: {why}. Nothing was stored."),
            ),
            Error::TooLarge => Problem::new(
                ErrorCode::PayloadTooLarge,
                "The body is larger than the signed size. Nothing was stored.",
            ),
            Error::AlreadyExists => {
                Problem::new(ErrorCode::Conflict, "This upload URL was already used.")
            }
            Error::UploadInProgress => Problem::new(
                ErrorCode::Conflict,
                "Another upload to this URL is in progress; nothing was stored from this one.",
            ),
            Error::TooSlow => Problem::new(
                ErrorCode::RequestTimeout,
                "The body arrived too slowly. Nothing was stored.",
            ),
            Error::Store(_) => {
                tracing::error!(error = %err, "object store error");
                Problem::new(
                    ErrorCode::ServiceUnavailable,
                    "The object store is unavailable; retry later.",
                )
            }
            Error::Config(_) => {
                tracing::error!(error = %err, "storage configuration error");
                Problem::internal()
            }
        }
    }
}

impl From<Error> for Problem {
    fn from(err: Error) -> Self {
        Problem::from(&err)
    }
}
