//! Starting, serving and stopping.

mod error;
pub(crate) mod parts;
mod workers;

use std::future::Future;
use std::sync::Arc;

use tenantkit_auth::Mailer;
use tokio::net::TcpListener;

pub use error::ServerError;
pub use parts::{
    access_tokens, auth_flows, auth_flows_on, migrate, open_database, plans, refresh_sessions,
    refresh_sessions_on, storage,
};
use workers::{spawn_billing_worker, spawn_realtime_relay, spawn_sweeper};

use crate::{AppState, Config, app, redact_url};

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
        let sso = parts::sso(&config, &auth)?;
        let state = AppState::new(db, auth, files, local)
            .with_sso(Some(sso))
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
