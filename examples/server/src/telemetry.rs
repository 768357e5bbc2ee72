//! Structured logs.

use tracing_subscriber::EnvFilter;

use crate::LogFormat;

/// Installs the global tracing subscriber: level from `RUST_LOG` (default `info`), lines in
/// `format`. Calling it twice is harmless (the second call does nothing).
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    // Logs go to stderr, so stdout carries only command output (the JSON of admin commands).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    let _already_set = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
