//! Values derived from the configuration fields.

use std::time::Duration;

use super::Config;

impl Config {
    /// The database URL, defaulting to a SQLite file in the data folder.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("tenantkit.db").display()))
    }

    /// The base URL of links in emails.
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.bind))
            .trim_end_matches('/')
            .to_owned()
    }

    /// The trusted proxies, reading the configured forwarding header.
    pub fn proxies(&self) -> tenantkit_core::TrustedProxies {
        self.trusted_proxies
            .clone()
            .with_header(self.forwarded_header.into())
    }

    /// The rate limits of the auth flows.
    pub fn rate_limits(&self) -> tenantkit_auth::RateLimitConfig {
        tenantkit_auth::RateLimitConfig {
            per_network_per_minute: self.rate_per_ip,
            refresh_per_network_per_minute: self.rate_refresh_per_ip,
            failures_per_account_network_per_minute: self.rate_per_account,
            failures_per_account_per_minute: self.rate_per_account_total,
            ..tenantkit_auth::RateLimitConfig::default()
        }
    }

    /// How long a session check's answer is cached.
    pub fn session_check_ttl(&self) -> Duration {
        Duration::from_millis(self.session_check_ttl_ms.min(5000))
    }

    /// The request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// How long a connection may take to send a request's headers.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs.max(1))
    }

    /// How long an answer may make no write progress before its connection is closed.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout_secs.max(1))
    }

    /// The deadline of a request to a signed storage URL.
    pub fn transfer_timeout(&self) -> Duration {
        Duration::from_secs(self.transfer_timeout_secs.max(1))
    }

    /// How slowly upload bodies to the local store may arrive.
    pub fn transfer_limits(&self) -> tenantkit_storage::TransferLimits {
        tenantkit_storage::TransferLimits {
            idle_timeout: Duration::from_secs(self.transfer_idle_secs.max(1)),
            min_bytes_per_sec: self.transfer_min_rate,
            ..tenantkit_storage::TransferLimits::default()
        }
    }

    /// How long a shutdown waits for requests in flight.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}
