//! `/v1/projects/{id}/tasks` and `/v1/tasks/{id}`: tenant-scoped task CRUD.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use tenantkit_core::{
    NewTask, Page, Permission, Principal, ProjectId, Task, TaskFilter, TaskId, TaskPatch,
    TaskStatus, TenantScope, TenantScoped, UserId,
};

use super::{page_request, valid};
use crate::extract::{etag, ApiId, ApiJson, IfMatch, RawQuery};
use crate::{AppState, Result};

pub(crate) async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(project_id): ApiId<ProjectId>,
    query: RawQuery,
) -> Result<Json<Page<Task>>> {
    principal.require(Permission::Read)?;
    let mut errors = Vec::new();
    let status =
        query.parse::<TaskStatus>("status", "must be todo, in_progress or done", &mut errors);
    let assignee_id = query.parse::<UserId>("assignee_id", "must be a user id", &mut errors);
    let page = page_request(&query, &["status", "assignee_id"], &mut errors);
    valid(errors)?;
    let mut tx = state.db.begin_read(&TenantScope::of(&principal)).await?;
    // Another tenant's (or no) project answers 404, not an empty list.
    tenantkit_core::Project::get(&mut tx, project_id).await?;
    let filter = TaskFilter {
        project_id: Some(project_id),
        status,
        assignee_id,
    };
    let tasks = Task::list(&mut tx, &filter, page).await?;
    tx.commit().await?;
    Ok(Json(tasks))
}

pub(crate) async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(project_id): ApiId<ProjectId>,
    ApiJson(mut new): ApiJson<NewTask>,
) -> Result<impl IntoResponse> {
    principal.require(Permission::WriteContent)?;
    // The project comes from the path, checked inside the tenant scope; never from the body.
    new.project_id = project_id;
    let mut tx = state.db.begin(&TenantScope::of(&principal)).await?;
    let task = Task::create(&mut tx, new).await?;
    tx.commit().await?;
    let location = [(header::LOCATION, format!("/v1/tasks/{}", task.id))];
    Ok((
        StatusCode::CREATED,
        etag(task.version),
        location,
        Json(task),
    ))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId<TaskId>,
) -> Result<impl IntoResponse> {
    principal.require(Permission::Read)?;
    let mut tx = state.db.begin_read(&TenantScope::of(&principal)).await?;
    let task = Task::get(&mut tx, id).await?;
    tx.commit().await?;
    Ok((etag(task.version), Json(task)))
}

pub(crate) async fn update(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId<TaskId>,
    IfMatch(expected): IfMatch,
    ApiJson(patch): ApiJson<TaskPatch>,
) -> Result<impl IntoResponse> {
    principal.require(Permission::WriteContent)?;
    let mut tx = state.db.begin(&TenantScope::of(&principal)).await?;
    let expected = match expected {
        Some(version) => version,
        None => Task::get(&mut tx, id).await?.version,
    };
    let task = Task::update(&mut tx, id, expected, patch).await?;
    tx.commit().await?;
    Ok((etag(task.version), Json(task)))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId<TaskId>,
    IfMatch(expected): IfMatch,
) -> Result<StatusCode> {
    principal.require(Permission::WriteContent)?;
    let mut tx = state.db.begin(&TenantScope::of(&principal)).await?;
    Task::delete(&mut tx, id, expected).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
