//! Liveness and readiness probes.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use tenantkit_core::{ErrorCode, Problem};

use crate::AppState;

/// Liveness: the process answers. Never touches dependencies, so a slow database does not
/// get the process restarted.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "The process answers", body = Health))
)]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `{"status": "ok"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    /// Always `ok`.
    status: &'static str,
}

/// `{"status": "ready", "database": "sqlite" | "postgres"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Ready {
    /// Always `ready`.
    status: &'static str,
    /// The backend in use.
    database: String,
}

/// The public keys that verify access tokens. Cached briefly: a rotated key must reach
/// verifiers before it signs.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "health",
    responses((status = 200, description = "The public keys that verify access tokens (RFC 7517)", body = serde_json::Value))
)]
pub(crate) async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    let cache = [(header::CACHE_CONTROL, "public, max-age=300")];
    (cache, Json(state.auth.tokens().keys().jwks()))
}

/// Readiness: the database answers within two seconds.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses((status = 200, description = "The database answers", body = Ready), (status = 503, description = "The database is not available", body = tenantkit_core::Problem, content_type = "application/problem+json"))
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, Problem> {
    match tokio::time::timeout(Duration::from_secs(2), state.db.ping()).await {
        Ok(Ok(())) => Ok(Json(Ready {
            status: "ready",
            database: state.db.backend().to_string(),
        })),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness check: database unavailable");
            Err(Problem::new(
                ErrorCode::ServiceUnavailable,
                "The database is not available.",
            ))
        }
        Err(_) => {
            tracing::warn!("readiness check: database timed out");
            Err(Problem::new(
                ErrorCode::ServiceUnavailable,
                "The database is not available.",
            ))
        }
    }
}
