//! Handlers shared by every tenant-scoped resource: read, conditional update, conditional
//! delete. One implementation, so every resource gets the same ETag, If-Match, permission and
//! not-found behaviour.

use std::str::FromStr;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tenantkit_core::{Permission, Principal, TenantScope, TenantScoped};

use crate::extract::{etag, ApiId, ApiJson, IfMatch};
use crate::{AppState, Result};

/// `GET /v1/<resources>/{id}`.
pub(crate) async fn get<T>(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId<T::Id>,
) -> Result<impl IntoResponse>
where
    T: TenantScoped + Serialize,
    T::Id: FromStr,
{
    principal.require(Permission::Read)?;
    let mut tx = state.db.begin_read(&TenantScope::of(&principal)).await?;
    let record = T::get(&mut tx, id).await?;
    tx.commit().await?;
    Ok((etag(record.version()), Json(record)))
}

/// `PATCH /v1/<resources>/{id}`, conditional on `If-Match` when given.
pub(crate) async fn update<T>(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId<T::Id>,
    IfMatch(expected): IfMatch,
    ApiJson(patch): ApiJson<T::Patch>,
) -> Result<impl IntoResponse>
where
    T: TenantScoped + Serialize,
    T::Id: FromStr,
    T::Patch: DeserializeOwned,
{
    principal.require(Permission::WriteContent)?;
    let mut tx = state.db.begin(&TenantScope::of(&principal)).await?;
    // Without If-Match the client asked for an unconditional write: apply it to whatever
    // version is current inside this transaction.
    let expected = match expected {
        Some(version) => version,
        None => T::get(&mut tx, id).await?.version(),
    };
    let record = T::update(&mut tx, id, expected, patch).await?;
    tx.commit().await?;
    Ok((etag(record.version()), Json(record)))
}

/// `DELETE /v1/<resources>/{id}`, conditional on `If-Match` when given.
pub(crate) async fn delete<T>(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId<T::Id>,
    IfMatch(expected): IfMatch,
) -> Result<StatusCode>
where
    T: TenantScoped,
    T::Id: FromStr,
{
    principal.require(Permission::WriteContent)?;
    let mut tx = state.db.begin(&TenantScope::of(&principal)).await?;
    T::delete(&mut tx, id, expected).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The `201 Created` answer: ETag, Location and the record.
pub(crate) fn created<T: TenantScoped + Serialize>(
    record: T,
    location: String,
) -> impl IntoResponse {
    (
        StatusCode::CREATED,
        etag(record.version()),
        [(header::LOCATION, location)],
        Json(record),
    )
}
