//! Liveness and readiness probes.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use tenantkit_core::{ErrorCode, Problem};

use crate::AppState;

/// Liveness: the process answers. Never touches dependencies, so a slow database does not
/// get the process restarted.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The public keys that verify access tokens. Cached briefly: a rotated key must reach
/// verifiers before it signs.
pub(crate) async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    let cache = [(header::CACHE_CONTROL, "public, max-age=300")];
    (cache, Json(state.tokens.keys().jwks()))
}

/// Readiness: the database answers within two seconds.
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    match tokio::time::timeout(Duration::from_secs(2), state.db.ping()).await {
        Ok(Ok(())) => Ok(Json(
            json!({ "status": "ready", "database": state.db.backend().to_string() }),
        )),
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
