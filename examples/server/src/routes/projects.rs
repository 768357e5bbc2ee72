//! `/v1/projects`: tenant-scoped project CRUD.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use tenantkit_core::{
    NewProject, Page, Permission, Principal, Project, ProjectFilter, ProjectId, ProjectPatch,
    TenantScope, TenantScoped,
};

use super::{page_request, valid};
use crate::extract::{etag, ApiId, ApiJson, IfMatch, RawQuery};
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
    principal: Principal,
    ApiJson(new): ApiJson<NewProject>,
) -> Result<impl IntoResponse> {
    principal.require(Permission::WriteContent)?;
    let mut tx = state.db.begin(&TenantScope::of(&principal)).await?;
    let project = Project::create(&mut tx, new).await?;
    tx.commit().await?;
    let location = [(header::LOCATION, format!("/v1/projects/{}", project.id))];
    Ok((
        StatusCode::CREATED,
        etag(project.version),
        location,
        Json(project),
    ))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId<ProjectId>,
) -> Result<impl IntoResponse> {
    principal.require(Permission::Read)?;
    let mut tx = state.db.begin_read(&TenantScope::of(&principal)).await?;
    let project = Project::get(&mut tx, id).await?;
    tx.commit().await?;
    Ok((etag(project.version), Json(project)))
}

pub(crate) async fn update(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId<ProjectId>,
    IfMatch(expected): IfMatch,
    ApiJson(patch): ApiJson<ProjectPatch>,
) -> Result<impl IntoResponse> {
    principal.require(Permission::WriteContent)?;
    let mut tx = state.db.begin(&TenantScope::of(&principal)).await?;
    let expected = match expected {
        Some(version) => version,
        None => Project::get(&mut tx, id).await?.version,
    };
    let project = Project::update(&mut tx, id, expected, patch).await?;
    tx.commit().await?;
    Ok((etag(project.version), Json(project)))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId<ProjectId>,
    IfMatch(expected): IfMatch,
) -> Result<StatusCode> {
    principal.require(Permission::WriteContent)?;
    let mut tx = state.db.begin(&TenantScope::of(&principal)).await?;
    Project::delete(&mut tx, id, expected).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
