//! `/v1/projects`: tenant-scoped project CRUD.

use axum::extract::State;
use axum::Json;
use tenantkit_core::{
    Page, Permission, Principal, Project, ProjectFilter, TeamId, TenantScope, TenantScoped,
};

use super::{page_request, valid};
use crate::extract::RawQuery;
use crate::{AppState, Result};

#[utoipa::path(
    get,
    path = "/v1/projects",
    tag = "projects",
    params(super::docs::PageParams, super::docs::ProjectParams),
    responses((status = 200, description = "The projects the caller may see", body = Page<Project>)),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: RawQuery,
) -> Result<Json<Page<Project>>> {
    principal.require(Permission::Read)?;
    let mut errors = Vec::new();
    let team_id = query.parse::<TeamId>("team_id", "must be a team id", &mut errors);
    let page = page_request(&query, &["team_id"], &mut errors);
    valid(errors)?;
    let filter = team_id.map(ProjectFilter::team).unwrap_or_default();
    let mut tx = state.db.begin_read(&TenantScope::of(&principal)).await?;
    // Only the projects the caller may see: restricted ones of other teams are left out.
    let projects = Project::list(&mut tx, &filter, page).await?;
    tx.commit().await?;
    Ok(Json(projects))
}
