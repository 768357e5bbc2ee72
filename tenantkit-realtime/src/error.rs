//! The crate's error type.

/// What can go wrong in tenantkit-realtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A channel name that is not `tenant` or `<kind>:<id>` (see
    /// [`crate::ChannelName::parse`]).
    #[error("invalid channel name {0:?}")]
    InvalidChannel(String),
    /// An event whose frame would exceed [`crate::Limits::max_event_bytes`].
    #[error("the event is {0} bytes, more than the limit")]
    EventTooLarge(usize),
    /// An event name that is empty, too long or not printable ASCII, or data that is not JSON.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// The backplane failed (a network or database error); the event may not be published.
    #[error("backplane: {0}")]
    Backplane(String),
    /// A database error (tickets, the outbox).
    #[error(transparent)]
    Core(#[from] tenantkit_core::Error),
}

/// This crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
