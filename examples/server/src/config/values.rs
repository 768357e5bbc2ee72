//! The small value enums of the configuration and their conversions.

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// How access tokens are checked beyond their signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SessionCheckMode {
    /// The session must be live and the user a member; the current role replaces the token's.
    Strict,
    /// Tokens are honoured until they expire.
    Off,
}

/// Where realtime events travel (`TENANTKIT_REALTIME_BACKPLANE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RealtimeBackplaneKind {
    /// `redis` when TENANTKIT_REDIS_URL is set, else `memory`.
    Auto,
    /// In process: one instance.
    Memory,
    /// Redis (TENANTKIT_REDIS_URL): several instances.
    Redis,
    /// The PostgreSQL database itself (LISTEN/NOTIFY and a history table): several
    /// instances without Redis. PostgreSQL only.
    Postgres,
}

/// How signup treats addresses (see [`tenantkit_auth::flows::SignupMode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SignupMode {
    /// Signed in at once; a registered email answers 409.
    Open,
    /// Enumeration-safe: 202 for every well-formed signup; sign-in waits for a proven address.
    VerifyFirst,
}

impl From<SignupMode> for tenantkit_auth::flows::SignupMode {
    fn from(mode: SignupMode) -> Self {
        match mode {
            SignupMode::Open => Self::Open,
            SignupMode::VerifyFirst => Self::VerifyFirst,
        }
    }
}

/// The forwarding header trusted proxies write (see [`tenantkit_core::ForwardedHeader`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (nginx, AWS ALB, Caddy, most load balancers).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded`, for proxies that append to it.
    Forwarded,
}

impl From<ForwardedHeader> for tenantkit_core::ForwardedHeader {
    fn from(header: ForwardedHeader) -> Self {
        match header {
            ForwardedHeader::XForwardedFor => Self::XForwardedFor,
            ForwardedHeader::Forwarded => Self::Forwarded,
        }
    }
}

/// Where uploaded files are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StorageBackend {
    /// `<data dir>/uploads`, through signed URLs this server answers.
    Local,
    /// An S3-compatible bucket, through presigned URLs.
    S3,
}
