//! The crate's error type.

use serde::{Deserialize, Serialize};

use crate::Version;

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One invalid field of a request, reported in a `validation_failed` problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// The field's name as the client spelled it (`"name"`, `"limit"`, `"cursor"`).
    pub field: String,
    /// What is wrong, in words fit for the client.
    pub message: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Everything that can go wrong in tenantkit-core.
///
/// Each variant says when it happens; [`crate::Problem::from`] is the one place that turns
/// it into an HTTP answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The record does not exist *in the caller's tenant*. Another tenant's record is reported
    /// exactly like a missing one.
    #[error("not found")]
    NotFound,
    /// The caller is authenticated but its role or scopes do not allow the action.
    #[error("forbidden")]
    Forbidden,
    /// The request is malformed (syntax), e.g. a body that is not JSON.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The request is well-formed but some fields are invalid.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// The change collides with existing state, e.g. a unique name or slug that is taken.
    /// The message is safe to show to the client.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The tenant's plan allows no more (seats, storage). The message is safe to show.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// Optimistic concurrency: the record changed since the client read it.
    #[error("version mismatch: the record is at version {current}")]
    VersionMismatch {
        /// The version the record is at now.
        current: Version,
    },
    /// [`crate::TenantTx::commit`] was called after a statement of the transaction had
    /// failed; the transaction was rolled back. A bug in the caller, shown as a 500.
    #[error("transaction aborted by an earlier failed statement; nothing was committed")]
    Aborted,
    /// The database failed or is unreachable. Never shown to clients.
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// Applying migrations failed. Never shown to clients.
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The configuration is unusable (unknown database URL scheme, unsafe PostgreSQL role, ...).
    #[error("configuration error: {0}")]
    Config(String),
    /// A secret could not be sealed or opened ([`crate::Keyring`]): a wrong or missing key, or
    /// a damaged or moved ciphertext. Never shown to clients.
    #[error("secret box: {0}")]
    Secret(#[source] crate::SecretError),
}

impl Error {
    /// A `validation_failed` error about one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Validation(vec![FieldError::new(field, message)])
    }

    /// Whether this error is the server's fault (a 5xx) rather than the client's.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Error::Aborted
                | Error::Database(_)
                | Error::Migrate(_)
                | Error::Config(_)
                | Error::Secret(_)
        )
    }
}

impl From<sqlx::Error> for Error {
    /// Constraint violations are the client's problem (409/422); everything else is internal.
    /// Messages never carry SQL, constraint or table names.
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => Error::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                Error::Conflict("a record with the same unique value already exists".into())
            }
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                Error::Conflict("the record refers to a record that does not exist".into())
            }
            // PostgreSQL cannot store NUL (22021) or untranslatable characters (22P05) in text:
            // the client sent them, so it is their problem, on either backend.
            sqlx::Error::Database(db)
                if matches!(db.code().as_deref(), Some("22021" | "22P05")) =>
            {
                Error::Validation(vec![FieldError::new(
                    "body",
                    "contains characters that cannot be stored",
                )])
            }
            sqlx::Error::Database(db) if db.is_check_violation() => {
                Error::Validation(vec![FieldError::new("body", "a value is out of range")])
            }
            _ => Error::Database(err),
        }
    }
}
