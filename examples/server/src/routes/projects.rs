//! `/v1/projects`: the example domain's projects, tenant-scoped, team-restricted when asked.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use tenantkit_core::{Page, Permission, Principal, TeamId, TenantScope, TenantScoped};
use utoipa::IntoParams;

use super::records::{create_route, record_routes};
use crate::domain::{NewProject, Project, ProjectFilter, ProjectPatch};
use crate::extract::{Listing, PageQuery, QueryFilter};
use crate::{AppState, Result};

/// Filters of `GET /v1/projects`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ProjectQuery {
    /// Only projects of this team.
    #[param(inline)]
    team_id: Option<TeamId>,
}

impl QueryFilter for ProjectQuery {}

/// The projects the caller may see (restricted ones of other teams are left out).
#[utoipa::path(
    get,
    path = "/v1/projects",
    tag = "projects",
    params(PageQuery, ProjectQuery),
    responses((status = 200, description = "The projects the caller may see", body = Page<Project>)),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: Listing<ProjectQuery>,
) -> Result<Json<Page<Project>>> {
    principal.require(Permission::Read)?;
    let filter = query
        .filter
        .team_id
        .map(ProjectFilter::team)
        .unwrap_or_default();
    let mut tx = state.db.begin_read(&TenantScope::of(&principal)).await?;
    let projects = Project::list(&mut tx, &filter, query.page).await?;
    tx.commit().await?;
    Ok(Json(projects))
}

create_route!(Project, NewProject, "projects", "/v1/projects", create);
record_routes!(Project, ProjectPatch, "projects", "/v1/projects/{id}",
    get: get, update: update, delete: delete);
