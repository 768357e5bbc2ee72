//! `/v1/projects/{id}/tasks` and `/v1/tasks/{id}`: tenant-scoped task CRUD.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use tenantkit_core::{
    NewTask, Page, Permission, Principal, ProjectId, Task, TaskFilter, TaskStatus, TenantScope,
    TenantScoped, UserId,
};

use super::records::{change_event, created};
use super::{page_request, valid};
use crate::extract::{ApiId, ApiJson, ClientInfo, RawQuery};
use crate::{AppState, Result};

#[utoipa::path(
    get,
    path = "/v1/projects/{id}/tasks",
    tag = "tasks",
    params(("id" = uuid::Uuid, Path, description = "The project"), super::docs::PageParams, super::docs::TaskParams),
    responses((status = 200, description = "The project's tasks", body = Page<Task>)),
    security(("bearer" = []))
)]
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
    let title_contains = query.get("q", &mut errors).map(str::to_owned);
    if title_contains
        .as_deref()
        .is_some_and(|q| q.chars().count() > 200 || q.chars().any(char::is_control))
    {
        errors.push(tenantkit_core::FieldError::new(
            "q",
            "must be at most 200 characters, without control characters",
        ));
    }
    let page = page_request(&query, &["status", "assignee_id", "q"], &mut errors);
    valid(errors)?;
    let mut tx = state.db.begin_read(&TenantScope::of(&principal)).await?;
    // Another tenant's (or no) project answers 404, not an empty list.
    tenantkit_core::Project::get(&mut tx, project_id).await?;
    let filter = TaskFilter {
        project_id: Some(project_id),
        status,
        assignee_id,
        title_contains: title_contains.filter(|q| !q.is_empty()),
    };
    let tasks = Task::list(&mut tx, &filter, page).await?;
    tx.commit().await?;
    Ok(Json(tasks))
}

#[utoipa::path(
    post,
    path = "/v1/projects/{id}/tasks",
    tag = "tasks",
    params(("id" = uuid::Uuid, Path, description = "The project")),
    request_body(content = NewTask, content_type = "application/json"),
    responses((status = 201, description = "Created", body = Task, headers(("ETag" = String, description = "The version, for If-Match"), ("Location" = String, description = "Where the new record lives")))),
    security(("bearer" = []))
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    client: ClientInfo,
    principal: Principal,
    ApiId(project_id): ApiId<ProjectId>,
    ApiJson(mut new): ApiJson<NewTask>,
) -> Result<impl IntoResponse> {
    principal.require(Permission::WriteContent)?;
    // The project comes from the path, checked inside the tenant scope; never from the body.
    new.project_id = project_id;
    let mut tx = state.db.begin(&TenantScope::of(&principal)).await?;
    let task = Task::create(&mut tx, new).await?;
    tx.audit(change_event::<Task>(
        &client, &principal, "created", task.id,
    ))
    .await?;
    tx.commit().await?;
    Ok(created(task))
}
