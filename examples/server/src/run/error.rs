//! Why the server could not start or stopped: [`ServerError`], in words for an operator.

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The database could not be opened, migrated or was unsafe to use, or an admin command's
    /// input was invalid.
    #[error("{}", describe(.0))]
    Core(#[from] tenantkit_core::Error),
    /// A signing key could not be loaded or created.
    #[error("signing keys: {0}")]
    Keys(String),
    /// The storage backend could not be set up.
    #[error("storage: {0}")]
    Storage(#[from] tenantkit_storage::Error),
    /// The billing inbox failed.
    #[error("billing: {0}")]
    Billing(#[from] tenantkit_billing::Error),
    /// An auth flow (an operator command) refused or failed.
    #[error("{}", describe_auth(.0))]
    Auth(#[from] tenantkit_auth::Error),
    /// The realtime backplane (Redis) could not be reached or configured.
    #[error("realtime: {0}")]
    Realtime(#[from] tenantkit_realtime::Error),
    /// Binding the address or another I/O step failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// An auth error in words for an operator, including field errors.
fn describe_auth(err: &tenantkit_auth::Error) -> String {
    match err {
        tenantkit_auth::Error::Core(core) => describe(core),
        tenantkit_auth::Error::WeakPassword(errors) => errors
            .iter()
            .map(|e| format!("{} {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

/// A core error in words for an operator, including field errors.
fn describe(err: &tenantkit_core::Error) -> String {
    match err {
        tenantkit_core::Error::Validation(errors) => errors
            .iter()
            .map(|e| format!("{} {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}
