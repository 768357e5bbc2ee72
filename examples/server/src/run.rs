//! Starting, serving and stopping.

use std::future::Future;
use std::io;

use tenantkit_auth::{AccessTokens, JwtConfig, RefreshConfig, RefreshSessions};
use tenantkit_core::{Backend, Database, DatabaseOptions};
use tokio::net::TcpListener;

use crate::{app, redact_url, AppState, Config};

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
    /// Binding the address or another I/O step failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
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

/// Applies the migrations: on SQLite to the database file, on PostgreSQL as the table owner
/// (`DATABASE_MIGRATION_URL`, else `DATABASE_URL`).
///
/// # Errors
/// [`ServerError::Core`] when the database is unreachable or a migration fails.
pub async fn migrate(config: &Config) -> Result<(), ServerError> {
    let url = config
        .database_migration_url
        .clone()
        .unwrap_or_else(|| config.database_url());
    tracing::info!(database = %redact_url(&url), "applying migrations");
    let owner = Database::connect_with(&url, &DatabaseOptions::for_migrations()).await?;
    let result = owner.migrate().await;
    owner.close().await;
    Ok(result?)
}

/// Opens the application database, applying migrations first where the server may.
///
/// # Errors
/// [`ServerError::Core`] when the database is unreachable, a migration fails, or (PostgreSQL)
/// the application role could bypass row-level security.
pub async fn open_database(config: &Config) -> Result<Database, ServerError> {
    let url = config.database_url();
    let db = Database::connect(&url).await?;
    match db.backend() {
        Backend::Sqlite => db.migrate().await?,
        _ if config.database_migration_url.is_some() => migrate(config).await?,
        _ => tracing::warn!(
            "DATABASE_MIGRATION_URL is not set: assuming `tenantkit-server migrate` has been run"
        ),
    }
    tracing::info!(database = %redact_url(&url), backend = %db.backend(), "database ready");
    Ok(db)
}

/// The access-token issuer and verifier configured by `config`.
///
/// # Errors
/// [`ServerError::Keys`] when the keys cannot be loaded.
pub fn access_tokens(config: &Config) -> Result<AccessTokens, ServerError> {
    let keys = crate::keys::load_key_set(config)?;
    Ok(AccessTokens::new(
        keys,
        JwtConfig::new(&config.jwt_issuer, &config.jwt_audience),
    ))
}

/// Refresh sessions in `db`, with the configured secret and grace window.
///
/// # Errors
/// [`ServerError::Keys`] when the secret cannot be loaded.
pub fn refresh_sessions(
    config: &Config,
    db: &Database,
) -> Result<RefreshSessions<Database>, ServerError> {
    let secret = crate::keys::load_refresh_secret(config)?;
    let settings = RefreshConfig {
        grace: std::time::Duration::from_secs(config.refresh_grace_secs),
        ..RefreshConfig::default()
    };
    RefreshSessions::new(db.clone(), &secret, settings)
        .map_err(|e| ServerError::Keys(e.to_string()))
}

/// Serves the application on `listener` until `shutdown` completes, then lets requests in
/// flight finish.
///
/// # Errors
/// [`ServerError::Io`] when accepting connections fails.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    // Connect info gives handlers the client address (per-IP rate limits, audit entries).
    let service = app(state, config).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Runs the server as configured until `shutdown`: data folder, database, migrations, listen,
/// serve, drain, close.
///
/// # Errors
/// Any [`ServerError`] from start-up or serving.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    std::fs::create_dir_all(&config.data_dir)?;
    let db = open_database(&config).await?;
    let tokens = access_tokens(&config)?;
    let sessions = refresh_sessions(&config, &db)?;
    let listener = TcpListener::bind(config.bind).await?;
    tracing::info!(address = %listener.local_addr()?, "listening");
    let mut state = AppState::new(db.clone(), tokens, sessions, &config);
    if let Some(url) = &config.smtp_url {
        let mailer = tenantkit_auth::SmtpMailer::from_url(url, &config.mail_from)
            .map_err(|e| ServerError::Keys(e.to_string()))?;
        tracing::info!(relay = %redact_url(url), "emails go through SMTP");
        state = state.with_mailer(std::sync::Arc::new(mailer));
    }
    let result = serve(listener, state, &config, shutdown).await;
    db.close().await;
    tracing::info!("stopped");
    result
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}
