//! Server configuration: read once from flags and environment variables, then passed down.

mod derived;
#[cfg(test)]
mod tests;
mod values;

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;

use tenantkit_auth::Algorithm;

pub use values::{
    ForwardedHeader, LogFormat, RealtimeBackplaneKind, SessionCheckMode, SignupMode, StorageBackend,
};

/// Everything the server needs to start. Every field has a flag and an environment variable;
/// the defaults run the embedded configuration with no setup.
#[derive(Clone, clap::Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "TENANTKIT_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Folder for the SQLite database, local uploads and development keys.
    #[arg(long, env = "TENANTKIT_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Database the application connects to: `sqlite://...` or `postgres://...`
    /// [default: sqlite://DATA_DIR/tenantkit.db]. On PostgreSQL this must be an RLS-bound
    /// role (see README).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// PostgreSQL only: the table owner's URL, used to apply migrations at start-up and by
    /// `migrate`. Without it `serve` assumes `migrate` was run.
    #[arg(long, env = "DATABASE_MIGRATION_URL", hide_env_values = true)]
    pub database_migration_url: Option<String>,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "TENANTKIT_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,

    /// Seconds a request may take before it is answered 408.
    #[arg(long, env = "TENANTKIT_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,

    /// Seconds a connection may take to send a request's headers before it is closed
    /// (against slowloris clients).
    #[arg(long, env = "TENANTKIT_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,

    /// Most connections served at once; further ones wait to be accepted.
    #[arg(long, env = "TENANTKIT_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// Most connections one client network (an IPv4 address, an IPv6 /64) may hold at once,
    /// and four times as many per IPv6 /48; further ones are closed as soon as they are
    /// accepted, so one client cannot take every slot. Trusted proxies
    /// (`TENANTKIT_TRUSTED_PROXIES`) are exempt: they carry many clients, and limit
    /// connections themselves.
    #[arg(
        long,
        env = "TENANTKIT_MAX_CONNECTIONS_PER_CLIENT",
        default_value_t = 64
    )]
    pub max_connections_per_client: usize,

    /// Seconds an answer may make no progress writing to a client (a client that does not
    /// read) before its connection is closed.
    #[arg(long, env = "TENANTKIT_WRITE_TIMEOUT_SECS", default_value_t = 30)]
    pub write_timeout_secs: u64,

    /// Seconds a request to a signed storage URL may take until its answer begins (408 after):
    /// an upload must be received within it (with the default, a 100 MB upload needs about
    /// 114 KB/s). A download's body is bounded by the minimum rate and the write timeout.
    #[arg(long, env = "TENANTKIT_TRANSFER_TIMEOUT_SECS", default_value_t = 900)]
    pub transfer_timeout_secs: u64,

    /// Seconds an upload body may send nothing before it is refused (408).
    #[arg(long, env = "TENANTKIT_TRANSFER_IDLE_SECS", default_value_t = 20)]
    pub transfer_idle_secs: u64,

    /// Lowest rate of a signed-URL body, in bytes per second, counted after its first 10
    /// seconds: an upload that falls behind is refused (408), a download the client reads
    /// more slowly is cut off. `0` checks only the idle timeout.
    #[arg(long, env = "TENANTKIT_TRANSFER_MIN_RATE", default_value_t = 1024)]
    pub transfer_min_rate: u64,

    /// Seconds a shutdown (SIGTERM) waits for requests in flight; connections still open
    /// after it (slow or stalled clients) are closed.
    #[arg(long, env = "TENANTKIT_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,

    /// PEM private key that signs access tokens (production). Without it, development keys
    /// are created and kept under `<data dir>/keys` (see `keys rotate`).
    #[arg(long, env = "TENANTKIT_JWT_KEY_FILE")]
    pub jwt_key_file: Option<PathBuf>,

    /// The key (32 random bytes, raw or base64) that seals secrets at rest: second-factor
    /// seeds. Without it, one is created at `<data dir>/secret.key` (mode 0600). Several
    /// instances share one file.
    #[arg(long, env = "TENANTKIT_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,

    /// The id stored in every secret sealed with `TENANTKIT_SECRET_KEY_FILE` (for rotation).
    #[arg(long, env = "TENANTKIT_SECRET_KEY_ID", default_value = "k1")]
    pub secret_key_id: String,

    /// Hosts a tenant's single sign-on issuer may be on over plain http or at a private or
    /// loopback address, comma-separated (an on-premises provider; a test provider on
    /// 127.0.0.1). None by default: issuers are https on public addresses.
    #[arg(long, env = "TENANTKIT_SSO_ALLOW_HOSTS", value_delimiter = ',')]
    pub sso_allow_hosts: Vec<String>,

    /// Where a finished single sign-on lands (with `?sso_code=`) [default: the public URL's
    /// `/`]. A login's `redirect_to` may also name the public URL's or a CORS origin.
    #[arg(long, env = "TENANTKIT_SSO_APP_URL")]
    pub sso_app_url: Option<String>,

    /// The name authenticator apps show for second-factor accounts.
    #[arg(long, env = "TENANTKIT_MFA_ISSUER", default_value = "tenantkit")]
    pub mfa_issuer: String,

    /// Algorithm of `TENANTKIT_JWT_KEY_FILE`: EdDSA, RS256 or ES256.
    #[arg(long, env = "TENANTKIT_JWT_ALGORITHM", default_value = "EdDSA", value_parser = parse_algorithm)]
    pub jwt_algorithm: Algorithm,

    /// The `iss` of access tokens.
    #[arg(long, env = "TENANTKIT_JWT_ISSUER", default_value = "tenantkit")]
    pub jwt_issuer: String,

    /// The `aud` of access tokens.
    #[arg(long, env = "TENANTKIT_JWT_AUDIENCE", default_value = "tenantkit-api")]
    pub jwt_audience: String,

    /// Secret (at least 32 bytes) that derives refresh-token successors; keep it across
    /// restarts. Default: a development secret under `<data dir>/keys`.
    #[arg(long, env = "TENANTKIT_REFRESH_SECRET", hide_env_values = true)]
    pub refresh_secret: Option<String>,

    /// Seconds a rotated refresh token still yields the same successor.
    #[arg(long, env = "TENANTKIT_REFRESH_GRACE_SECS", default_value_t = 5)]
    pub refresh_grace_secs: u64,

    /// Attempts of each kind (login, signup, password reset, invitation accept, email
    /// confirmation; each its own bucket) allowed per minute from one client network (an IPv4
    /// address, an IPv6 /64).
    #[arg(long, env = "TENANTKIT_RATE_PER_IP", default_value_t = NonZeroU32::new(30).unwrap_or(NonZeroU32::MIN))]
    pub rate_per_ip: NonZeroU32,

    /// Refreshes allowed per minute from one client network.
    #[arg(long, env = "TENANTKIT_RATE_REFRESH_PER_IP", default_value_t = NonZeroU32::new(600).unwrap_or(NonZeroU32::MIN))]
    pub rate_refresh_per_ip: NonZeroU32,

    /// Failed logins allowed per minute against one account from one client network.
    #[arg(long, env = "TENANTKIT_RATE_PER_ACCOUNT", default_value_t = NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN))]
    pub rate_per_account: NonZeroU32,

    /// Failed logins allowed per minute against one account from everywhere.
    #[arg(long, env = "TENANTKIT_RATE_PER_ACCOUNT_TOTAL", default_value_t = NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN))]
    pub rate_per_account_total: NonZeroU32,

    /// Password hashes allowed to wait for a worker (argon2 runs on one worker per core);
    /// beyond it signups and logins answer 503 + `Retry-After` at once. Default: 16 per core.
    #[arg(long, env = "TENANTKIT_PASSWORD_QUEUE")]
    pub password_queue: Option<usize>,

    /// Reverse proxies whose forwarding header (`TENANTKIT_FORWARDED_HEADER`) names the
    /// client, comma-separated networks (`10.0.0.0/8, ::1`). None by default: the TCP peer is
    /// the client.
    #[arg(long, env = "TENANTKIT_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: tenantkit_core::TrustedProxies,

    /// The one header the trusted proxies name the client in; the other is ignored entirely.
    /// `x-forwarded-for` (the default) for nginx, AWS ALB, Caddy and most load balancers, which
    /// append to it and pass a client's own `Forwarded` through; `forwarded` (RFC 7239) only
    /// for a proxy that appends to `Forwarded`.
    #[arg(
        long,
        env = "TENANTKIT_FORWARDED_HEADER",
        value_enum,
        default_value = "x-forwarded-for"
    )]
    pub forwarded_header: ForwardedHeader,

    /// The public base URL of the service, for links in emails [default: http://BIND].
    #[arg(long, env = "TENANTKIT_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// SMTP relay for password-reset and verification emails, e.g.
    /// `smtps://user:pass@smtp.example.com:465`. Without it, emails go to `<data dir>/outbox`.
    #[arg(long, env = "TENANTKIT_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// The sender of emails.
    #[arg(
        long,
        env = "TENANTKIT_MAIL_FROM",
        default_value = "tenantkit <noreply@localhost>"
    )]
    pub mail_from: String,

    /// Browser origins allowed to call the API (CORS), comma-separated, e.g.
    /// `https://app.example.com`. None by default: no cross-origin browser access.
    #[arg(long, env = "TENANTKIT_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Realtime events kept per channel for clients resuming with `since` (the in-memory
    /// backplane; at most 5 minutes old).
    #[arg(long, env = "TENANTKIT_REALTIME_HISTORY", default_value_t = 100)]
    pub realtime_history: usize,

    /// WebSocket connections one tenant may hold on this instance (more answer 429).
    #[arg(
        long,
        env = "TENANTKIT_REALTIME_MAX_CONNECTIONS_PER_TENANT",
        default_value_t = 1000
    )]
    pub realtime_max_connections_per_tenant: usize,

    /// Redis, shared by every instance (`redis://127.0.0.1:6379/0`): the rate limits (one
    /// budget for all instances; unreachable Redis refuses sign-ins with 503, never lets them
    /// through unlimited), the realtime backplane (events and their history reach every
    /// instance) and the revocation bus (a logout on one instance closes sockets and evicts
    /// session caches on all of them).
    #[arg(long, env = "TENANTKIT_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Where realtime events travel: `auto` (the default: `redis` when TENANTKIT_REDIS_URL is
    /// set, else `memory`), `memory` (one instance), `redis` or `postgres` (several instances;
    /// `postgres` uses the PostgreSQL database through LISTEN/NOTIFY).
    #[arg(
        long,
        env = "TENANTKIT_REALTIME_BACKPLANE",
        value_enum,
        default_value = "auto"
    )]
    pub realtime_backplane: RealtimeBackplaneKind,

    /// How access tokens are checked beyond their signature. `strict` (the default): the
    /// session must be live and its user still a member, whose current role replaces the
    /// token's (a revocation, removal or role change takes effect within the check's cache
    /// period). `off`: tokens are honoured until they expire (stateless; a removed member keeps
    /// their rights for up to 15 minutes).
    #[arg(
        long,
        env = "TENANTKIT_SESSION_CHECK",
        value_enum,
        default_value = "strict"
    )]
    pub session_check: SessionCheckMode,

    /// `open` (the default): signup signs the owner in at once, and a registered email answers
    /// 409 (which reveals that the address has an account). `verify-first`: every well-formed
    /// signup answers the same 202, the account waits for its mailed link, and login refuses
    /// an unproven address (`email_unverified`).
    #[arg(
        long,
        env = "TENANTKIT_SIGNUP_MODE",
        value_enum,
        default_value = "open"
    )]
    pub signup_mode: SignupMode,

    /// Milliseconds a session check's answer is cached (at most 5000).
    #[arg(long, env = "TENANTKIT_SESSION_CHECK_TTL_MS", default_value_t = 5000)]
    pub session_check_ttl_ms: u64,

    /// File holding the key (at least 32 bytes) that anchors audit entries; keep it outside the
    /// database. Default: a development key under `<data dir>/keys/audit.key`.
    #[arg(long, env = "TENANTKIT_AUDIT_KEY_FILE")]
    pub audit_key_file: Option<PathBuf>,

    /// Where uploaded files are stored: `local` (the default: `<data dir>/uploads`, served by
    /// this server through signed URLs) or `s3` (any S3-compatible store; see the
    /// `TENANTKIT_S3_*` settings and the standard AWS credential variables).
    #[arg(long, env = "TENANTKIT_STORAGE", value_enum, default_value = "local")]
    pub storage: StorageBackend,

    /// The S3 bucket (with `TENANTKIT_STORAGE=s3`).
    #[arg(long, env = "TENANTKIT_S3_BUCKET")]
    pub s3_bucket: Option<String>,

    /// A custom S3 endpoint (MinIO, SeaweedFS, R2), addressed path-style; AWS when unset.
    #[arg(long, env = "TENANTKIT_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// The S3 region [default: `AWS_REGION`, else us-east-1].
    #[arg(long, env = "TENANTKIT_S3_REGION")]
    pub s3_region: Option<String>,

    /// The largest uploaded file, in bytes.
    #[arg(long, env = "TENANTKIT_UPLOAD_MAX_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub upload_max_bytes: u64,

    /// The media types that may be uploaded, comma-separated [default: common images, PDF,
    /// plain text, CSV, JSON, ZIP, MP3, MP4]. HTML, SVG, JavaScript and XML are refused even
    /// when listed.
    #[arg(long, env = "TENANTKIT_UPLOAD_TYPES", value_delimiter = ',')]
    pub upload_types: Vec<String>,

    /// Bytes each tenant may store (files plus pending uploads) until billing sets plans.
    #[arg(long, env = "TENANTKIT_STORAGE_QUOTA_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub storage_quota_bytes: u64,

    /// Seconds between sweeps of expired uploads and orphaned objects (0: never; run
    /// `storage sweep` instead).
    #[arg(long, env = "TENANTKIT_STORAGE_SWEEP_SECS", default_value_t = 600)]
    pub storage_sweep_secs: u64,

    /// File holding the key (at least 32 bytes) that signs local upload and download URLs.
    /// Default: a development key under `<data dir>/keys/storage.key`.
    #[arg(long, env = "TENANTKIT_STORAGE_KEY_FILE")]
    pub storage_key_file: Option<PathBuf>,

    /// Stripe webhook endpoint secrets (`whsec_…`), comma-separated (several during a
    /// rotation). Without one, every delivery to `/v1/billing/stripe/webhook` is refused.
    #[arg(
        long,
        env = "TENANTKIT_STRIPE_WEBHOOK_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub stripe_webhook_secrets: Vec<String>,

    /// The Stripe secret API key (`sk_…` or a restricted `rk_…` key allowed to create
    /// Checkout and portal sessions). Without it `POST /v1/billing/checkout` and
    /// `/v1/billing/portal` answer 503.
    #[arg(long, env = "TENANTKIT_STRIPE_API_KEY", hide_env_values = true)]
    pub stripe_api_key: Option<String>,

    /// The Stripe API's base URL (Stripe's own by default; tests point it at a local
    /// stand-in).
    #[arg(long, env = "TENANTKIT_STRIPE_API_BASE")]
    pub stripe_api_base: Option<String>,

    /// Seconds a billing worker's claim on an event lasts: after a crash the event is taken
    /// over (and handled exactly once) when it ends.
    #[arg(long, env = "TENANTKIT_BILLING_LEASE_SECS", default_value_t = 60)]
    pub billing_lease_secs: u64,

    /// Seconds the realtime relay's claim on outbox messages lasts: after a crash they are
    /// published (once: the backplane drops a republished message) when it ends.
    #[arg(
        long,
        env = "TENANTKIT_REALTIME_RELAY_LEASE_SECS",
        default_value_t = 30
    )]
    pub realtime_relay_lease_secs: u64,

    /// The plans file (TOML: `[plans.<name>] stripe_prices, seats, storage_bytes,
    /// features`). Without it only the free plan exists: unlimited seats and
    /// `TENANTKIT_STORAGE_QUOTA_BYTES` of storage.
    #[arg(long, env = "TENANTKIT_PLANS_FILE")]
    pub plans_file: Option<PathBuf>,

    /// Log line format.
    #[arg(
        long,
        env = "TENANTKIT_LOG_FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            database_url: None,
            database_migration_url: None,
            body_limit: 1024 * 1024,
            request_timeout_secs: 30,
            header_timeout_secs: 10,
            max_connections: 4096,
            max_connections_per_client: 64,
            write_timeout_secs: 30,
            transfer_timeout_secs: 900,
            transfer_idle_secs: 20,
            transfer_min_rate: 1024,
            shutdown_grace_secs: 20,
            log_format: LogFormat::Pretty,
            jwt_key_file: None,
            secret_key_file: None,
            secret_key_id: "k1".to_owned(),
            mfa_issuer: "tenantkit".to_owned(),
            sso_allow_hosts: Vec::new(),
            sso_app_url: None,
            jwt_algorithm: Algorithm::EdDSA,
            jwt_issuer: "tenantkit".to_owned(),
            jwt_audience: "tenantkit-api".to_owned(),
            refresh_secret: None,
            refresh_grace_secs: 5,
            rate_per_ip: NonZeroU32::new(30).unwrap_or(NonZeroU32::MIN),
            rate_refresh_per_ip: NonZeroU32::new(600).unwrap_or(NonZeroU32::MIN),
            rate_per_account: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
            rate_per_account_total: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
            password_queue: None,
            trusted_proxies: tenantkit_core::TrustedProxies::default(),
            forwarded_header: ForwardedHeader::XForwardedFor,
            public_url: None,
            session_check: SessionCheckMode::Strict,
            signup_mode: SignupMode::Open,
            session_check_ttl_ms: 5000,
            audit_key_file: None,
            cors_origins: Vec::new(),
            realtime_history: 100,
            realtime_max_connections_per_tenant: 1000,
            redis_url: None,
            realtime_backplane: RealtimeBackplaneKind::Auto,
            smtp_url: None,
            mail_from: "tenantkit <noreply@localhost>".to_owned(),
            storage: StorageBackend::Local,
            s3_bucket: None,
            s3_endpoint: None,
            s3_region: None,
            upload_max_bytes: 100 * 1024 * 1024,
            upload_types: Vec::new(),
            storage_quota_bytes: 1024 * 1024 * 1024,
            storage_sweep_secs: 600,
            storage_key_file: None,
            stripe_webhook_secrets: Vec::new(),
            realtime_relay_lease_secs: 30,
            stripe_api_key: None,
            stripe_api_base: None,
            plans_file: None,
            billing_lease_secs: 60,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("data_dir", &self.data_dir)
            .field("database_url", &redact_url(&self.database_url()))
            .field(
                "database_migration_url",
                &self.database_migration_url.as_deref().map(redact_url),
            )
            .field("body_limit", &self.body_limit)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("header_timeout_secs", &self.header_timeout_secs)
            .field("max_connections", &self.max_connections)
            .field(
                "max_connections_per_client",
                &self.max_connections_per_client,
            )
            .field("write_timeout_secs", &self.write_timeout_secs)
            .field("transfer_timeout_secs", &self.transfer_timeout_secs)
            .field("transfer_idle_secs", &self.transfer_idle_secs)
            .field("transfer_min_rate", &self.transfer_min_rate)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("log_format", &self.log_format)
            .field("jwt_key_file", &self.jwt_key_file)
            .field("secret_key_file", &self.secret_key_file)
            .field("secret_key_id", &self.secret_key_id)
            .field("mfa_issuer", &self.mfa_issuer)
            .field("sso_allow_hosts", &self.sso_allow_hosts)
            .field("sso_app_url", &self.sso_app_url)
            .field("jwt_algorithm", &self.jwt_algorithm)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field(
                "refresh_secret",
                &self.refresh_secret.as_ref().map(|_| "***"),
            )
            .field("refresh_grace_secs", &self.refresh_grace_secs)
            .field("rate_per_ip", &self.rate_per_ip)
            .field("rate_refresh_per_ip", &self.rate_refresh_per_ip)
            .field("rate_per_account", &self.rate_per_account)
            .field("rate_per_account_total", &self.rate_per_account_total)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("forwarded_header", &self.forwarded_header)
            .field("public_url", &self.public_url)
            .field("session_check", &self.session_check)
            .field("signup_mode", &self.signup_mode)
            .field("password_queue", &self.password_queue)
            .field("session_check_ttl_ms", &self.session_check_ttl_ms)
            .field("audit_key_file", &self.audit_key_file)
            .field("cors_origins", &self.cors_origins)
            .field("realtime_history", &self.realtime_history)
            .field(
                "realtime_max_connections_per_tenant",
                &self.realtime_max_connections_per_tenant,
            )
            .field("realtime_relay_lease_secs", &self.realtime_relay_lease_secs)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("realtime_backplane", &self.realtime_backplane)
            .field("smtp_url", &self.smtp_url.as_deref().map(redact_url))
            .field(
                "stripe_api_key",
                &self.stripe_api_key.as_ref().map(|_| "<set>"),
            )
            .field("stripe_api_base", &self.stripe_api_base)
            .field("mail_from", &self.mail_from)
            .finish()
    }
}

fn parse_algorithm(text: &str) -> Result<Algorithm, String> {
    match text {
        "EdDSA" => Ok(Algorithm::EdDSA),
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        _ => Err("expected EdDSA, RS256 or ES256".to_owned()),
    }
}

/// Hides the password of a `scheme://user:password@host/...` URL, for logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}
