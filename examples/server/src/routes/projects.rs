//! `/v1/projects`: tenant-scoped project CRUD.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use tenantkit_core::{
    NewProject, Page, Permission, Principal, Project, ProjectFilter, TenantScope, TenantScoped,
};

use super::records::{change_event, created};
use super::{page_request, valid};
use crate::extract::{ApiJson, ClientInfo, RawQuery};
use crate::{AppState, Result};

pub(crate) async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: RawQuery,
) -> Result<Json<Page<Project>>> {
    principal.require(Permission::Read)?;
    let mut errors = Vec::new();
    let page = page_request(&query, &[], &mut errors);
    valid(errors)?;
    let mut tx = state.db.begin_read(&TenantScope::of(&principal)).await?;
    let projects = Project::list(&mut tx, &ProjectFilter::default(), page).await?;
    tx.commit().await?;
    Ok(Json(projects))
}

pub(crate) async fn create(
    State(state): State<AppState>,
    client: ClientInfo,
    principal: Principal,
    ApiJson(new): ApiJson<NewProject>,
) -> Result<impl IntoResponse> {
    principal.require(Permission::WriteContent)?;
    let mut tx = state.db.begin(&TenantScope::of(&principal)).await?;
    let project = Project::create(&mut tx, new).await?;
    tx.audit(change_event::<Project>(
        &client, &principal, "created", project.id,
    ))
    .await?;
    tx.commit().await?;
    let location = format!("/v1/projects/{}", project.id);
    Ok(created(project, location))
}
