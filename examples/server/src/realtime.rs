//! The realtime broadcaster of the reference server: tenantkit-realtime with the example
//! domain's `project:<id>` channels (authorized by project visibility), tickets in the
//! database, the CORS origins, the session check and revocations of the auth flows, and the
//! backplane (in memory, or Redis for several instances, which also carries revocations).

use std::sync::Arc;

use tenantkit_auth::Revocations;
use tenantkit_core::{Database, Principal, TenantScope, TenantScoped};
use tenantkit_realtime::{Backplane, Channels, PgBackplane, Realtime, RedisBackplane, Tickets};

use crate::domain::{Project, ProjectId};
use crate::{Config, RealtimeBackplaneKind};

/// Whether `principal` sees the project `id` (a restricted project outside the caller's
/// teams, another tenant's project and a missing one all answer `false`).
async fn sees_project(
    db: Database,
    principal: Principal,
    id: String,
) -> tenantkit_realtime::Result<bool> {
    let Ok(id) = id.parse::<ProjectId>() else {
        return Ok(false);
    };
    let mut tx = db.begin_read(&TenantScope::of(&principal)).await?;
    let found = Project::find(&mut tx, id).await?;
    tx.commit().await?;
    Ok(found.is_some())
}

/// The channels: `tenant` and `project:<id>`.
pub fn channels(db: &Database) -> Channels {
    let db = db.clone();
    Channels::new().kind("project", move |principal, id| {
        sees_project(db.clone(), principal, id)
    })
}

/// The backplane `config` asks for, and the revocation bus that goes with it.
#[derive(Debug)]
pub struct ChosenBackplane {
    /// Where realtime events travel.
    pub backplane: Arc<dyn Backplane>,
    /// The revocation bus shared by every instance (with Redis); `None`: in process.
    pub revocations: Option<Revocations>,
}

/// The backplane of `config` (`TENANTKIT_REALTIME_BACKPLANE`, `TENANTKIT_REDIS_URL`):
/// connects to Redis when it is the choice.
///
/// # Errors
/// [`tenantkit_realtime::Error::Backplane`] when Redis or PostgreSQL is the choice and cannot
/// be reached (or is not configured).
pub async fn backplane(config: &Config) -> tenantkit_realtime::Result<ChosenBackplane> {
    let history = tenantkit_realtime::HistoryLimits {
        max_events: config.realtime_history.max(1),
        ..tenantkit_realtime::HistoryLimits::default()
    };
    let kind = match (config.realtime_backplane, config.redis_url.as_deref()) {
        (RealtimeBackplaneKind::Auto, None) => RealtimeBackplaneKind::Memory,
        (RealtimeBackplaneKind::Auto, Some(_)) => RealtimeBackplaneKind::Redis,
        (kind, _) => kind,
    };
    Ok(match kind {
        RealtimeBackplaneKind::Redis => {
            let url = config.redis_url.as_deref().ok_or_else(|| {
                tenantkit_realtime::Error::Backplane(
                    "TENANTKIT_REALTIME_BACKPLANE=redis needs TENANTKIT_REDIS_URL".into(),
                )
            })?;
            let redis = RedisBackplane::connect(url, history).await?;
            tracing::info!(redis = %crate::redact_url(url), "realtime backplane: redis");
            ChosenBackplane {
                revocations: Some(Revocations::new(redis.revocation_bus())),
                backplane: Arc::new(redis),
            }
        }
        RealtimeBackplaneKind::Postgres => {
            let url = config.database_url();
            if !url.starts_with("postgres") {
                return Err(tenantkit_realtime::Error::Backplane(
                    "TENANTKIT_REALTIME_BACKPLANE=postgres needs a PostgreSQL DATABASE_URL".into(),
                ));
            }
            let pg = PgBackplane::connect(&url, history).await?;
            // The pruner stops when the backplane is dropped.
            drop(pg.run_pruner(std::time::Duration::from_secs(60)));
            tracing::info!("realtime backplane: postgres");
            ChosenBackplane {
                revocations: Some(Revocations::new(pg.revocation_bus())),
                backplane: Arc::new(pg),
            }
        }
        RealtimeBackplaneKind::Memory | RealtimeBackplaneKind::Auto => ChosenBackplane {
            backplane: Arc::new(tenantkit_realtime::MemoryBackplane::new(history)),
            revocations: None,
        },
    })
}

/// The broadcaster configured by `config` over `db`, the auth flows and `backplane`.
pub fn realtime(
    config: &Config,
    db: &Database,
    auth: &tenantkit_auth::flows::AuthFlows,
    backplane: Arc<dyn Backplane>,
) -> Realtime {
    let mut limits = tenantkit_realtime::Limits::default();
    limits.max_connections_per_tenant = config.realtime_max_connections_per_tenant.max(1);
    let mut builder = Realtime::builder(auth.tokens().clone())
        .backplane(backplane)
        .limits(limits)
        .channels(channels(db))
        .tickets(Tickets::new(db.clone()))
        .origins(&config.cors_origins)
        .revocations(auth.sessions().revocations());
    if config.session_check == crate::SessionCheckMode::Strict {
        builder = builder.session_check(
            tenantkit_auth::CachedSessionCheck::with_ttl(
                Arc::new(auth.sessions().clone()),
                config.session_check_ttl(),
            )
            .with_revocations(auth.sessions().revocations()),
        );
    }
    builder.build()
}

/// The problem answer of a realtime error.
pub(crate) fn problem(err: tenantkit_realtime::Error) -> tenantkit_core::Problem {
    match err {
        tenantkit_realtime::Error::Core(err) => tenantkit_core::Problem::from(err),
        other => {
            tracing::error!(error = %other, "realtime failure");
            tenantkit_core::Problem::internal()
        }
    }
}
