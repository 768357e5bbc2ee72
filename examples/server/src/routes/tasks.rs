//! `/v1/projects/{id}/tasks` and `/v1/tasks/{id}`: tasks inside projects, visible exactly when
//! their project is.

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use serde::Deserialize;
use tenantkit_core::{FieldError, Page, Permission, Principal, TenantScope, TenantScoped, UserId};
use utoipa::IntoParams;

use super::records::{announce, change_event, created, record_routes};
use crate::domain::{NewTask, Project, ProjectId, Task, TaskFilter, TaskPatch, TaskStatus};
use crate::extract::{ApiId, ApiJson, Client, Listing, PageQuery, QueryFilter};
use crate::{AppState, Result};

/// Filters of `GET /v1/projects/{id}/tasks`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TaskQuery {
    /// Only tasks in this status.
    #[param(inline)]
    status: Option<TaskStatus>,
    /// Only tasks assigned to this user.
    #[param(inline)]
    assignee_id: Option<UserId>,
    /// Only tasks whose title contains this text, case-insensitively (at most 200 characters).
    #[param(max_length = 200)]
    q: Option<String>,
}

impl QueryFilter for TaskQuery {
    fn check(&self, errors: &mut Vec<FieldError>) {
        if self
            .q
            .as_deref()
            .is_some_and(|q| q.chars().count() > 200 || q.chars().any(char::is_control))
        {
            errors.push(FieldError::new(
                "q",
                "must be at most 200 characters, without control characters",
            ));
        }
    }
}

/// A project's tasks; another tenant's (or no) project answers 404, not an empty list.
#[utoipa::path(
    get,
    path = "/v1/projects/{id}/tasks",
    tag = "tasks",
    params(("id" = uuid::Uuid, Path, description = "The project"), PageQuery, TaskQuery),
    responses((status = 200, description = "The project's tasks", body = Page<Task>)),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(project_id): ApiId<ProjectId>,
    query: Listing<TaskQuery>,
) -> Result<Json<Page<Task>>> {
    principal.require(Permission::Read)?;
    let mut tx = state.db.begin_read(&TenantScope::of(&principal)).await?;
    Project::get(&mut tx, project_id).await?;
    let filter = TaskFilter {
        project_id: Some(project_id),
        status: query.filter.status,
        assignee_id: query.filter.assignee_id,
        title_contains: query.filter.q.filter(|q| !q.is_empty()),
    };
    let tasks = Task::list(&mut tx, &filter, query.page).await?;
    tx.commit().await?;
    Ok(Json(tasks))
}

/// Creates a task in a project the caller may see.
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
    client: Client,
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
    announce(&mut tx, &task, "created", &task).await?;
    tx.commit().await?;
    Ok(created(task))
}

record_routes!(Task, TaskPatch, "tasks", "/v1/tasks/{id}",
    get: get, update: update, delete: delete);
