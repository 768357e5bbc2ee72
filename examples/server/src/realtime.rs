//! The realtime broadcaster of the reference server: tenantkit-realtime with the example
//! domain's `project:<id>` channels (authorized by project visibility), tickets in the
//! database, the CORS origins, and the session check and revocations of the auth flows.

use std::sync::Arc;

use tenantkit_core::{Database, Principal, TenantScope, TenantScoped};
use tenantkit_realtime::{Channels, Realtime, Tickets};

use crate::Config;
use crate::domain::{Project, ProjectId};

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

/// The broadcaster configured by `config` over `db` and the auth flows: one instance, the
/// in-memory backplane.
pub fn realtime(
    config: &Config,
    db: &Database,
    auth: &tenantkit_auth::flows::AuthFlows,
) -> Realtime {
    let history = tenantkit_realtime::HistoryLimits {
        max_events: config.realtime_history.max(1),
        ..tenantkit_realtime::HistoryLimits::default()
    };
    let mut builder = Realtime::builder(auth.tokens().clone())
        .backplane(Arc::new(tenantkit_realtime::MemoryBackplane::new(history)))
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
