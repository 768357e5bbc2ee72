//! Starting, serving and stopping.

use std::future::Future;
use std::io;

use std::sync::Arc;

use tenantkit_auth::flows::AuthFlows;
use tenantkit_auth::{
    AccessTokens, JwtConfig, Mailer, OutboxMailer, RateLimits, RefreshConfig, RefreshSessions,
};
use tenantkit_core::{Backend, Database};
use tokio::net::TcpListener;

use crate::{AppState, Config, app, redact_url};

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
    Io(#[from] io::Error),
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
    Ok(Database::migrate_at(&url, &crate::domain::all_migrations()).await?)
}

/// Opens the application database, applying migrations first where the server may.
///
/// # Errors
/// [`ServerError::Core`] when the database is unreachable, a migration fails, or (PostgreSQL)
/// the application role could bypass row-level security.
pub async fn open_database(config: &Config) -> Result<Database, ServerError> {
    let url = config.database_url();
    let backend = if url.starts_with("postgres") {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    // PostgreSQL: migrate as the owner first, so the application role's start-up checks (an
    // RLS-safe role, every tenant table behind RLS) see the current schema.
    match backend {
        Backend::Postgres if config.database_migration_url.is_some() => migrate(config).await?,
        Backend::Postgres => tracing::warn!(
            "DATABASE_MIGRATION_URL is not set: assuming `tenantkit-server migrate` has been run"
        ),
        _ => {}
    }
    let db = Database::connect(&url)
        .await?
        .with_audit_key(crate::keys::load_audit_key(config)?);
    if db.backend() == Backend::Sqlite {
        db.migrate(&crate::domain::all_migrations()).await?;
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
    refresh_sessions_on(config, db, None)
}

/// [`refresh_sessions`] publishing revocations on `revocations` (a bus shared by every
/// instance) instead of an in-process one.
///
/// # Errors
/// [`ServerError::Keys`] when the secret cannot be loaded.
pub fn refresh_sessions_on(
    config: &Config,
    db: &Database,
    revocations: Option<tenantkit_auth::Revocations>,
) -> Result<RefreshSessions<Database>, ServerError> {
    let secret = crate::keys::load_refresh_secret(config)?;
    let settings = RefreshConfig {
        grace: std::time::Duration::from_secs(config.refresh_grace_secs),
        ..RefreshConfig::default()
    };
    let sessions = RefreshSessions::new(db.clone(), &secret, settings)
        .map_err(|e| ServerError::Keys(e.to_string()))?;
    Ok(match revocations {
        Some(revocations) => sessions.with_revocations(revocations),
        None => sessions,
    })
}

/// The auth flows configured by `config` over `db`: keys, refresh sessions, rate limits,
/// mailer (SMTP when configured, else the development outbox) and the links' base URL.
///
/// # Errors
/// [`ServerError::Keys`] when a key, the refresh secret or the SMTP relay cannot be set up.
pub fn auth_flows(config: &Config, db: &Database) -> Result<AuthFlows, ServerError> {
    auth_flows_on(config, db, None)
}

/// [`auth_flows`] publishing revocations on `revocations` (a bus shared by every instance).
///
/// # Errors
/// As [`auth_flows`].
pub fn auth_flows_on(
    config: &Config,
    db: &Database,
    revocations: Option<tenantkit_auth::Revocations>,
) -> Result<AuthFlows, ServerError> {
    let tokens = access_tokens(config)?;
    let sessions = refresh_sessions_on(config, db, revocations)?;
    let mailer: Arc<dyn Mailer> = match &config.smtp_url {
        Some(url) => {
            let mailer = tenantkit_auth::SmtpMailer::from_url(url, &config.mail_from)
                .map_err(|e| ServerError::Keys(e.to_string()))?;
            tracing::info!(relay = %redact_url(url), "emails go through SMTP");
            Arc::new(mailer)
        }
        None => Arc::new(OutboxMailer::new(config.data_dir.join("outbox"))),
    };
    let mut passwords = tenantkit_auth::PasswordHasher::new();
    if let Some(waiting) = config.password_queue {
        passwords = passwords.with_queue_limit(waiting);
    }
    Ok(AuthFlows::new(db.clone(), tokens, sessions)
        .with_passwords(passwords)
        .with_limits(Arc::new(RateLimits::new(config.rate_limits())))
        .with_mailer(mailer)
        .with_public_url(&config.public_url())
        .with_signup_mode(config.signup_mode.into())
        .with_member_events(Arc::new(tenantkit_realtime::MemberEventsToRealtime)))
}

/// The upload lifecycle configured by `config` over `db`: the local store under
/// `<data dir>/uploads` (and the service answering its URLs), or the S3 bucket.
///
/// # Errors
/// [`ServerError::Keys`] or [`ServerError::Storage`] when the store cannot be set up.
pub fn storage(
    config: &Config,
    db: &Database,
) -> Result<
    (
        tenantkit_storage::Storage,
        Option<tenantkit_storage::LocalStorageService>,
    ),
    ServerError,
> {
    let (store, local): (Arc<dyn tenantkit_storage::ObjectStore>, _) = match config.storage {
        crate::StorageBackend::Local => {
            let key = crate::keys::load_storage_key(config)?;
            let store = tenantkit_storage::LocalStore::new(
                config.data_dir.join("uploads"),
                &format!("{}/v1/storage", config.public_url()),
                &key,
            )?
            .with_transfer_limits(config.transfer_limits());
            let service = store.service();
            (Arc::new(store), Some(service))
        }
        crate::StorageBackend::S3 => {
            let bucket = config.s3_bucket.as_deref().ok_or_else(|| {
                ServerError::Storage(tenantkit_storage::Error::Config(
                    "TENANTKIT_STORAGE=s3 needs TENANTKIT_S3_BUCKET".into(),
                ))
            })?;
            let s3 = tenantkit_storage::S3Config::from_env(
                bucket,
                config.s3_endpoint.as_deref(),
                config.s3_region.as_deref(),
            )?;
            tracing::info!(bucket, endpoint = ?config.s3_endpoint, "files go to S3");
            (Arc::new(tenantkit_storage::S3Store::new(s3)), None)
        }
    };
    let mut limits = tenantkit_storage::Limits {
        max_file_bytes: config.upload_max_bytes,
        ..tenantkit_storage::Limits::default()
    };
    let types: Vec<String> = config
        .upload_types
        .iter()
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    if !types.is_empty() {
        limits.allowed_types = types;
    }
    let storage = tenantkit_storage::Storage::new(db.clone(), store)
        .with_limits(limits)
        .with_quota(Arc::new(tenantkit_storage::FixedQuota(Some(
            config.storage_quota_bytes,
        ))))
        // Files may hang off projects (`parent_id`), seen by whoever sees the project.
        .with_parent(tenantkit_storage::FileParent::new("projects", "id")?.team_restricted());
    Ok((storage, local))
}

/// The plans: `TENANTKIT_PLANS_FILE`, else only the free plan. One rule for the free plan
/// either way: a `[plans.free]` in the file says what it grants; otherwise it has unlimited
/// seats and `TENANTKIT_STORAGE_QUOTA_BYTES` of storage. Logs which limits the free plan has.
///
/// # Errors
/// [`ServerError::Billing`] for an unreadable or invalid plans file.
pub fn plans(config: &Config) -> Result<tenantkit_billing::PlanBook, ServerError> {
    let built_in_free = tenantkit_billing::Plan {
        stripe_prices: Vec::new(),
        seats: None,
        storage_bytes: Some(config.storage_quota_bytes),
        features: Vec::new(),
    };
    let plans = match &config.plans_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ServerError::Billing(tenantkit_billing::Error::Config(format!(
                    "plans file {}: {e}",
                    path.display()
                )))
            })?;
            tenantkit_billing::Plans::from_toml_with_free(&text, built_in_free)?
        }
        None => tenantkit_billing::Plans::with_free(built_in_free),
    };
    let (free, configured) = plans.free();
    let limit =
        |value: Option<u64>| value.map_or_else(|| "unlimited".to_owned(), |v| v.to_string());
    tracing::info!(
        seats = %limit(free.seats),
        storage_bytes = %limit(free.storage_bytes),
        source = if configured {
            "[plans.free] of the plans file"
        } else {
            "built-in (unlimited seats, TENANTKIT_STORAGE_QUOTA_BYTES)"
        },
        "free plan limits"
    );
    Ok(tenantkit_billing::PlanBook::new(Arc::new(plans)))
}

/// The server, ready to serve: its configuration and state. The binary and the end-to-end
/// tests both start the application through [`Server::prepare`] and [`Server::serve`].
#[derive(Debug)]
pub struct Server {
    config: Config,
    state: AppState,
}

impl Server {
    /// Everything but the listener: the data folder, the database (migrated where the server
    /// may), the keys and the auth flows.
    ///
    /// # Errors
    /// Any [`ServerError`] of start-up.
    pub async fn prepare(config: Config) -> Result<Self, ServerError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let db = open_database(&config).await?;
        let plans = plans(&config)?;
        let backplane = crate::realtime::backplane(&config).await?;
        let mut auth = auth_flows_on(&config, &db, backplane.revocations.clone())?;
        if let Some(url) = &config.redis_url {
            // Several instances: one budget for all of them.
            let limits = tenantkit_auth::RedisLimits::connect(url, config.rate_limits()).await?;
            tracing::info!(redis = %redact_url(url), "rate limits: redis");
            auth = auth.with_limits(Arc::new(limits));
        }
        let auth = auth.with_seat_limit(Arc::new(crate::entitlements::Seats(plans.clone())));
        let (files, local) = storage(&config, &db)?;
        let files = files.with_quota(Arc::new(crate::entitlements::StorageQuota(plans.clone())));
        let secrets: Vec<&str> = config
            .stripe_webhook_secrets
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        let verifier = if secrets.is_empty() {
            None
        } else {
            Some(
                tenantkit_billing::WebhookVerifier::new(&secrets).map_err(|e| {
                    ServerError::Keys(format!("TENANTKIT_STRIPE_WEBHOOK_SECRETS: {e}"))
                })?,
            )
        };
        let sessions = match config.stripe_api_key.as_deref().map(str::trim) {
            Some(key) if !key.is_empty() => Some(tenantkit_billing::StripeSessions::new(
                key,
                config.stripe_api_base.as_deref(),
                plans.clone(),
                &format!("{}/billing", config.public_url()),
            )?),
            _ => None,
        };
        let realtime = crate::realtime::realtime(&config, &db, &auth, backplane.backplane);
        let state = AppState::new(db, auth, files, local)
            .with_realtime(realtime)
            .with_proxies(config.proxies())
            .with_billing(verifier, plans)
            .with_stripe_sessions(sessions);
        Ok(Self { config, state })
    }

    /// The state handlers see.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Replaces the mailer (an API adapter in production, a memory mailer in tests).
    pub fn with_mailer(mut self, mailer: Arc<dyn Mailer>) -> Self {
        let auth = self.state.auth.clone().with_mailer(mailer);
        self.state.parts_mut().auth = auth;
        self
    }

    /// Serves the application on `listener` until `shutdown` completes, lets requests in
    /// flight finish (for at most the configured grace period), and closes the database.
    ///
    /// Connections are bounded at every step: a connection must send its request headers
    /// within the header timeout (also when idle between requests), an answer the client does
    /// not read fails after the write timeout, at most the configured number of connections
    /// are served at once (more wait in the listen backlog), and one client network holds at
    /// most its own share of them (more are closed at once), so slow clients cannot starve
    /// others. Request bodies have their own deadlines (the request timeout; the storage
    /// transfer limits).
    ///
    /// # Errors
    /// [`ServerError::Io`] when the listener's address cannot be read.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let db = self.state.db.clone();
        tracing::info!(address = %listener.local_addr()?, "listening");
        let (stop_background, background) = tokio::sync::watch::channel(false);
        let sweeper = spawn_sweeper(
            self.state.storage.clone(),
            self.config.storage_sweep_secs,
            background.clone(),
        );
        let billing_worker = spawn_billing_worker(
            &self.state,
            self.config.billing_lease_secs,
            background.clone(),
        );
        let relay = spawn_realtime_relay(
            &self.state,
            self.config.realtime_relay_lease_secs,
            background.clone(),
        );
        let realtime = self.state.realtime.clone();
        let router = app(self.state, &self.config);
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.config.header_timeout())
            .keep_alive(true);
        let (stopping, stop) = tokio::sync::watch::channel(false);
        let (closing, close) = tokio::sync::watch::channel(false);
        let max_connections = self.config.max_connections.max(1);
        let connections = Arc::new(tokio::sync::Semaphore::new(max_connections));
        let per_client = crate::connections::ClientConnections::new(
            self.config.max_connections_per_client,
            self.config.trusted_proxies.clone(),
        );
        let write_timeout = self.config.write_timeout();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            // Bounded connections: wait for a free slot before accepting another.
            let permit = tokio::select! {
                permit = connections.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %err, "accepting a connection failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // One client network may not hold every slot (slowloris, stalled uploads and
            // downloads): beyond its share, its new connections are closed unanswered.
            let Some(client_slot) = per_client.admit(peer.ip()) else {
                tracing::debug!("a client network holds its share of connections; closing");
                continue;
            };
            // The client address, for per-client rate limits and audit entries.
            let service = tower::ServiceExt::map_request(
                router.clone(),
                move |mut request: http::Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    request
                },
            );
            let io = crate::connections::WriteDeadline::new(stream, write_timeout);
            let connection = http
                .serve_connection(
                    hyper_util::rt::TokioIo::new(io),
                    hyper_util::service::TowerToHyperService::new(service),
                )
                .with_upgrades();
            let mut stop = stop.clone();
            let mut close = close.clone();
            tokio::spawn(async move {
                let mut connection = std::pin::pin!(connection);
                let result = tokio::select! {
                    result = connection.as_mut() => result,
                    _ = stop.changed() => {
                        // Finish the request in flight, then close; idle ones close now.
                        connection.as_mut().graceful_shutdown();
                        tokio::select! {
                            result = connection.as_mut() => result,
                            // The grace period is over: the connection is dropped (closed).
                            _ = close.changed() => Ok(()),
                        }
                    }
                };
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                drop(client_slot);
                drop(permit);
            });
        }
        drop(listener);
        let _ = stopping.send(true);
        // WebSocket clients are told to reconnect elsewhere (1001), and no new one is taken.
        realtime.shut_down();
        // Every connection gives its slot back once it is done; those still open after the
        // grace period (stalled or slow clients) are closed.
        let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
        let grace = self.config.shutdown_grace();
        if tokio::time::timeout(grace, connections.acquire_many(all))
            .await
            .is_err()
        {
            let open = max_connections.saturating_sub(connections.available_permits());
            tracing::warn!(
                open,
                "shutdown grace period over; closing the remaining connections"
            );
            let _ = closing.send(true);
            let _ = connections.acquire_many(all).await;
        }
        // The worker finishes the event in flight and the sweeper stops, within the grace
        // period; past it they are aborted: an event in flight is then rolled back with its
        // transaction and reclaimed after its lease by the next start (nothing acknowledged
        // is lost), and an interrupted sweep leaves at most an orphan the next one removes.
        let _ = stop_background.send(true);
        for mut task in sweeper.into_iter().chain([billing_worker, relay]) {
            if tokio::time::timeout(grace, &mut task).await.is_err() {
                tracing::warn!("a background task outlived the shutdown grace period; aborting it");
                task.abort();
                let _ = task.await;
            }
        }
        db.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Handles stored Stripe events (subscription state, the tenant's plan, audited) until
/// `stop` changes.
fn spawn_billing_worker(
    state: &AppState,
    lease_secs: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let mut worker = tenantkit_billing::Worker::new(
        state.db.clone(),
        tenantkit_billing::SubscriptionHandler::router(state.plans.plans().clone()),
    );
    worker.lease = time::Duration::seconds(i64::try_from(lease_secs.max(1)).unwrap_or(60));
    tokio::spawn(async move { worker.run(async move { drop(stop.changed().await) }).await })
}

/// Publishes committed realtime events from the outbox until `stop` changes.
fn spawn_realtime_relay(
    state: &AppState,
    lease_secs: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let mut relay = tenantkit_realtime::Relay::new(state.db.clone(), state.realtime.clone());
    relay.lease = std::time::Duration::from_secs(lease_secs.max(1));
    tokio::spawn(async move { relay.run(async move { drop(stop.changed().await) }).await })
}

/// Sweeps expired uploads and orphaned objects every `secs` seconds (never when 0) until
/// `stop` changes.
fn spawn_sweeper(
    storage: tenantkit_storage::Storage,
    secs: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let sweeper = tenantkit_storage::Sweeper::new(storage, std::time::Duration::from_secs(secs));
    (secs > 0).then(|| {
        tokio::spawn(async move { sweeper.run(async move { drop(stop.changed().await) }).await })
    })
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
    let bind = config.bind;
    let server = Server::prepare(config).await?;
    let listener = TcpListener::bind(bind).await?;
    server.serve(listener, shutdown).await
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
