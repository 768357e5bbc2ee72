//! `/v1/teams` and `/v1/teams/{id}/members`: groups of members inside the tenant.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use tenantkit_core::{
    NewTeam, Page, Permission, Principal, Team, TeamFilter, TeamId, TeamMember, TeamPatch,
    TenantScope, TenantScoped, UserId,
};
use utoipa::IntoParams;

use super::records::{create_route, record_routes};
use crate::extract::{ApiId, ApiIds, ApiJson, Client, Listing, NoFilter, PageQuery, QueryFilter};
use crate::{AppState, Result};

/// Filters of `GET /v1/teams`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TeamQuery {
    /// Only teams this user is in.
    #[param(inline)]
    member: Option<UserId>,
}

impl QueryFilter for TeamQuery {}

/// `GET /v1/teams[?member=<user id>]`: every member of the tenant may list its teams.
#[utoipa::path(
    get,
    path = "/v1/teams",
    tag = "teams",
    params(PageQuery, TeamQuery),
    responses((status = 200, description = "The tenant's teams", body = Page<Team>)),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: Listing<TeamQuery>,
) -> Result<Json<Page<Team>>> {
    principal.require(Permission::Read)?;
    let member = query.filter.member;
    let mut tx = state.db.begin_read(&TenantScope::of(&principal)).await?;
    let teams = Team::list(&mut tx, &TeamFilter { member }, query.page).await?;
    tx.commit().await?;
    Ok(Json(teams))
}

/// `GET /v1/teams/{id}/members`.
#[utoipa::path(
    get,
    path = "/v1/teams/{id}/members",
    tag = "teams",
    params(("id" = uuid::Uuid, Path, description = "The team"), PageQuery),
    responses((status = 200, description = "The team's members", body = Page<TeamMember>)),
    security(("bearer" = []))
)]
pub(crate) async fn members(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(team): ApiId<TeamId>,
    query: Listing<NoFilter>,
) -> Result<Json<Page<TeamMember>>> {
    principal.require(Permission::Read)?;
    let mut tx = state.db.begin_read(&TenantScope::of(&principal)).await?;
    let members = tx.team_members(team, query.page).await?;
    tx.commit().await?;
    Ok(Json(members))
}

/// The body of `POST /v1/teams/{id}/members`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub(crate) struct AddTeamMember {
    /// A member of the caller's tenant.
    pub(crate) user_id: UserId,
}

/// `POST /v1/teams/{id}/members {user_id}`: 201 with the team member.
#[utoipa::path(
    post,
    path = "/v1/teams/{id}/members",
    tag = "teams",
    params(("id" = uuid::Uuid, Path, description = "The team")),
    request_body(content = AddTeamMember, content_type = "application/json"),
    responses((status = 201, description = "Added", body = TeamMember), (status = 409, description = "Already in the team", body = tenantkit_core::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub(crate) async fn add_member(
    State(state): State<AppState>,
    client: Client,
    principal: Principal,
    ApiId(team): ApiId<TeamId>,
    ApiJson(body): ApiJson<AddTeamMember>,
) -> Result<impl IntoResponse> {
    principal.require(Permission::ManageMembers)?;
    let mut tx = state.db.begin(&TenantScope::of(&principal)).await?;
    let member = tx.add_team_member(team, body.user_id).await?;
    let event = client
        .event("team.member_added", Some(principal.user_id()))
        .target("team", team)
        .details(serde_json::json!({ "user_id": body.user_id }));
    tx.audit(event).await?;
    announce_membership(&mut tx, "team.member_added", team, body.user_id).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(member)))
}

/// `DELETE /v1/teams/{id}/members/{user_id}`: 204.
#[utoipa::path(
    delete,
    path = "/v1/teams/{id}/members/{user_id}",
    tag = "teams",
    params(("id" = uuid::Uuid, Path, description = "The team"), ("user_id" = uuid::Uuid, Path, description = "The member")),
    responses((status = 204, description = "Removed from the team")),
    security(("bearer" = []))
)]
pub(crate) async fn remove_member(
    State(state): State<AppState>,
    client: Client,
    principal: Principal,
    ApiIds(team, user): ApiIds<TeamId, UserId>,
) -> Result<StatusCode> {
    principal.require(Permission::ManageMembers)?;
    let mut tx = state.db.begin(&TenantScope::of(&principal)).await?;
    tx.remove_team_member(team, user).await?;
    let event = client
        .event("team.member_removed", Some(principal.user_id()))
        .target("team", team)
        .details(serde_json::json!({ "user_id": user }));
    tx.audit(event).await?;
    announce_membership(&mut tx, "team.member_removed", team, user).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

create_route!(Team, NewTeam, "teams", "/v1/teams", create);
record_routes!(Team, TeamPatch, "teams", "/v1/teams/{id}",
    get: get, update: update, delete: delete);

/// Announces a change of a team's members to the tenant's realtime subscribers after the
/// commit, as a change of access (restricted projects follow their team).
async fn announce_membership(
    tx: &mut tenantkit_core::TenantTx,
    event: &str,
    team: TeamId,
    user: UserId,
) -> Result<()> {
    let data = serde_json::json!({ "team_id": team, "user_id": user });
    tenantkit_realtime::publish_in(tx, tenantkit_realtime::TENANT, event, &data, true)
        .await
        .map_err(crate::realtime::problem)?;
    Ok(())
}
