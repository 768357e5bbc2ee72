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
use tenantkit_core::{Permission, Principal, Project, Task, Team, TenantScope, TenantScoped};

use super::auth::target;
use crate::extract::{etag, ApiId, ApiJson, ClientInfo, IfMatch};

/// A tenant-scoped record served over HTTP, with the name its audit actions use.
pub(crate) trait Resource: TenantScoped + Serialize {
    /// `project` → `project.created`, `project.updated`, `project.deleted`.
    const NAME: &'static str;
    /// Where its records live: `{COLLECTION}/{id}`.
    const COLLECTION: &'static str;
    /// What creating, changing and deleting one takes.
    const WRITE: Permission = Permission::WriteContent;
}

impl Resource for Project {
    const NAME: &'static str = "project";
    const COLLECTION: &'static str = "/v1/projects";
}

impl Resource for Task {
    const NAME: &'static str = "task";
    const COLLECTION: &'static str = "/v1/tasks";
}

impl Resource for Team {
    const NAME: &'static str = "team";
    const COLLECTION: &'static str = "/v1/teams";
    const WRITE: Permission = Permission::ManageMembers;
}

/// The audit event of a change to a `T`.
pub(crate) fn change_event<T: Resource>(
    client: &ClientInfo,
    principal: &Principal,
    change: &str,
    id: impl std::fmt::Display,
) -> tenantkit_core::AuditEvent {
    let action = format!("{}.{change}", T::NAME);
    target(
        client.event(&action, Some(principal.user_id())),
        T::NAME,
        id,
    )
}
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
    client: ClientInfo,
    principal: Principal,
    ApiId(id): ApiId<T::Id>,
    IfMatch(expected): IfMatch,
    ApiJson(patch): ApiJson<T::Patch>,
) -> Result<impl IntoResponse>
where
    T: Resource,
    T::Id: FromStr + std::fmt::Display,
    T::Patch: DeserializeOwned,
{
    principal.require(T::WRITE)?;
    let mut tx = state.db.begin(&TenantScope::of(&principal)).await?;
    // Without If-Match the write is unconditional: the repository applies it to the current
    // version.
    let record = T::update(&mut tx, id, expected, patch).await?;
    let mut event = change_event::<T>(&client, &principal, "updated", id);
    event.details = serde_json::json!({ "version": record.version() });
    tx.audit(event).await?;
    tx.commit().await?;
    Ok((etag(record.version()), Json(record)))
}

/// `DELETE /v1/<resources>/{id}`, conditional on `If-Match` when given.
pub(crate) async fn delete<T>(
    State(state): State<AppState>,
    client: ClientInfo,
    principal: Principal,
    ApiId(id): ApiId<T::Id>,
    IfMatch(expected): IfMatch,
) -> Result<StatusCode>
where
    T: Resource,
    T::Id: FromStr + std::fmt::Display,
{
    principal.require(T::WRITE)?;
    let mut tx = state.db.begin(&TenantScope::of(&principal)).await?;
    T::delete(&mut tx, id, expected).await?;
    tx.audit(change_event::<T>(&client, &principal, "deleted", id))
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/<resources>`, for resources created from their body alone.
pub(crate) async fn create<T>(
    State(state): State<AppState>,
    client: ClientInfo,
    principal: Principal,
    ApiJson(new): ApiJson<T::New>,
) -> Result<impl IntoResponse>
where
    T: Resource,
    T::Id: std::fmt::Display,
    T::New: DeserializeOwned,
{
    principal.require(T::WRITE)?;
    let mut tx = state.db.begin(&TenantScope::of(&principal)).await?;
    let record = T::create(&mut tx, new).await?;
    let id = record.id();
    tx.audit(change_event::<T>(&client, &principal, "created", id))
        .await?;
    tx.commit().await?;
    Ok(created::<T>(record))
}

/// The `201 Created` answer: ETag, Location and the record.
pub(crate) fn created<T>(record: T) -> impl IntoResponse
where
    T: Resource,
    T::Id: std::fmt::Display,
{
    let location = format!("{}/{}", T::COLLECTION, record.id());
    (
        StatusCode::CREATED,
        etag(record.version()),
        [(header::LOCATION, location)],
        Json(record),
    )
}
