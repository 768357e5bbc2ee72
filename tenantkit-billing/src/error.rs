//! The crate's error type and its HTTP mapping.

use tenantkit_core::{ErrorCode, Problem};

use crate::SignatureError;

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in tenantkit-billing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A core error (database).
    #[error(transparent)]
    Core(#[from] tenantkit_core::Error),
    /// The request is not a genuine, fresh Stripe delivery; nothing was stored.
    #[error("invalid signature: {0}")]
    Signature(#[from] SignatureError),
    /// The body is larger than the endpoint reads.
    #[error("webhook body too large")]
    TooLarge,
    /// A correctly signed body that is not a Stripe event.
    #[error("not a Stripe event: {0}")]
    NotAnEvent(&'static str),
    /// Stripe refused a request or could not be reached (the details are logged, not
    /// answered).
    #[error("Stripe: {0}")]
    Stripe(String),
    /// The configuration is unusable.
    #[error("configuration error: {0}")]
    Config(String),
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        Error::Core(err.into())
    }
}

impl From<&Error> for Problem {
    /// The one mapping from billing errors to HTTP answers.
    fn from(err: &Error) -> Self {
        match err {
            Error::Core(core) => Problem::from(core),
            Error::Signature(why) => Problem::new(
                ErrorCode::InvalidSignature,
                format!(
                    "The Stripe-Signature header is not valid for this body ({why}). Nothing was stored."
                ),
            ),
            Error::TooLarge => Problem::new(
                ErrorCode::PayloadTooLarge,
                "The webhook body is larger than this endpoint reads.",
            ),
            Error::NotAnEvent(why) => Problem::new(
                ErrorCode::BadRequest,
                format!("The body is not a Stripe event ({why})."),
            ),
            Error::Stripe(why) => Problem::new(
                ErrorCode::ServiceUnavailable,
                format!("Stripe could not create the session ({why}). Try again later."),
            ),
            Error::Config(_) => {
                tracing::error!(error = %err, "billing configuration error");
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
