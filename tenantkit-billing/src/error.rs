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
    /// The request's body could not be read (the client went away mid-body).
    #[error("the webhook body could not be read")]
    Unreadable,
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
            Error::Unreadable => Problem::new(
                ErrorCode::BadRequest,
                "The webhook body could not be read. Nothing was stored.",
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

/// Why an event handler ([`crate::EventHandler`], [`crate::ObjectHandler`]) failed: the
/// worker rolls the handler's effects back and records [`HandlerError::message`] as the
/// event's `last_error`. An ordinary error is retried with backoff (and becomes a dead letter
/// after the last attempt); a [permanent](HandlerError::permanent) one becomes a dead letter
/// at once, kept for `replay`.
///
/// `?` converts tenantkit-core's and this crate's errors, sqlx's, and messages (`String`,
/// `&str`) into it:
///
/// ```
/// use tenantkit_billing::HandlerError;
///
/// fn check(amount: i64) -> Result<(), HandlerError> {
///     if amount < 0 {
///         return Err(HandlerError::permanent("a negative amount is never valid"));
///     }
///     Err("the customer is not mapped yet".into()) // retried
/// }
/// assert!(check(-1).unwrap_err().is_permanent());
/// assert_eq!(check(1).unwrap_err().to_string(), "the customer is not mapped yet");
/// ```
#[derive(Debug)]
pub struct HandlerError {
    message: String,
    permanent: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl HandlerError {
    /// A failure worth retrying (the default: the data it waits for may arrive, the database
    /// may come back).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: false,
            source: None,
        }
    }

    /// A failure no retry can fix (the event itself is unusable): the event becomes a dead
    /// letter at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            permanent: true,
            ..Self::new(message)
        }
    }

    /// A retried failure caused by `source`; the message is `source`'s, with its causes.
    pub fn from_source(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        let mut message = source.to_string();
        let mut cause = source.source();
        while let Some(inner) = cause {
            message.push_str(": ");
            message.push_str(&inner.to_string());
            cause = inner.source();
        }
        Self {
            message,
            permanent: false,
            source: Some(Box::new(source)),
        }
    }

    /// What the worker records as the event's `last_error`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the event becomes a dead letter without further attempts.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

impl From<tenantkit_core::Error> for HandlerError {
    fn from(err: tenantkit_core::Error) -> Self {
        Self::from_source(err)
    }
}

impl From<Error> for HandlerError {
    fn from(err: Error) -> Self {
        Self::from_source(err)
    }
}

impl From<sqlx::Error> for HandlerError {
    fn from(err: sqlx::Error) -> Self {
        Self::from_source(tenantkit_core::Error::from(err))
    }
}

impl From<String> for HandlerError {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for HandlerError {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}
