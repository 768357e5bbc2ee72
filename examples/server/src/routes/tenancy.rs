//! `/v1/tenant`, `/v1/members` and `/v1/audit-log`: managing the caller's tenant.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use tenantkit_core::{
    AuditEntry, AuditFilter, Cursor, Membership, Page, Permission, Principal, Role, Tenant,
    TenantScope, UserId,
};
use time::OffsetDateTime;

use super::auth::target;
use super::{page_request, valid};
use crate::extract::{ApiId, ApiJson, ClientInfo, RawQuery};
use crate::{AppState, Result};

/// `GET /v1/tenant`.
#[utoipa::path(
    get,
    path = "/v1/tenant",
    tag = "tenant",
    responses((status = 200, description = "The caller's tenant", body = Tenant)),
    security(("bearer" = []))
)]
pub(crate) async fn get_tenant(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Tenant>> {
    principal.require(Permission::Read)?;
    let mut tx = state.db.begin_read(&TenantScope::of(&principal)).await?;
    let tenant = tx.tenant().await?;
    tx.commit().await?;
    Ok(Json(tenant))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub(crate) struct TenantPatch {
    name: String,
}

/// `PATCH /v1/tenant`: renames the tenant (the slug is immutable).
#[utoipa::path(
    patch,
    path = "/v1/tenant",
    tag = "tenant",
    request_body(content = TenantPatch, content_type = "application/json"),
    responses((status = 200, description = "Renamed", body = Tenant)),
    security(("bearer" = []))
)]
pub(crate) async fn patch_tenant(
    State(state): State<AppState>,
    client: ClientInfo,
    principal: Principal,
    ApiJson(body): ApiJson<TenantPatch>,
) -> Result<Json<Tenant>> {
    principal.require(Permission::ManageTenant)?;
    let mut tx = state.db.begin(&TenantScope::of(&principal)).await?;
    let before = tx.tenant().await?;
    let tenant = tx.rename_tenant(&body.name).await?;
    let mut event = target(
        client.event("tenant.updated", Some(principal.user_id())),
        "tenant",
        tenant.id,
    );
    event.details = json!({ "name": { "from": before.name, "to": tenant.name } });
    tx.audit(event).await?;
    tx.commit().await?;
    Ok(Json(tenant))
}

/// `GET /v1/members`.
#[utoipa::path(
    get,
    path = "/v1/members",
    tag = "members",
    params(super::docs::PageParams),
    responses((status = 200, description = "Members with their roles", body = Page<tenantkit_core::Member>)),
    security(("bearer" = []))
)]
pub(crate) async fn list_members(
    State(state): State<AppState>,
    principal: Principal,
    query: RawQuery,
) -> Result<Json<Page<tenantkit_core::Member>>> {
    principal.require(Permission::Read)?;
    let mut errors = Vec::new();
    let page = page_request(&query, &[], &mut errors);
    valid(errors)?;
    let mut tx = state.db.begin_read(&TenantScope::of(&principal)).await?;
    let members = tx.members(page).await?;
    tx.commit().await?;
    Ok(Json(members))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub(crate) struct RolePatch {
    role: Role,
}

/// `PATCH /v1/members/{user_id}`: changes a role. Owners alone grant or take the owner role;
/// the last owner stays.
#[utoipa::path(
    patch,
    path = "/v1/members/{user_id}",
    tag = "members",
    params(("user_id" = uuid::Uuid, Path, description = "The member")),
    request_body(content = RolePatch, content_type = "application/json"),
    responses((status = 200, description = "The new role", body = Membership), (status = 409, description = "The last owner cannot be demoted", body = tenantkit_core::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub(crate) async fn patch_member(
    State(state): State<AppState>,
    client: ClientInfo,
    principal: Principal,
    ApiId(user): ApiId<UserId>,
    ApiJson(body): ApiJson<RolePatch>,
) -> Result<Json<Membership>> {
    principal.require(Permission::ManageMembers)?;
    let mut tx = state.db.begin(&TenantScope::of(&principal)).await?;
    let (membership, previous) = tx.change_role(user, body.role, principal.user_id()).await?;
    let mut event = target(
        client.event("member.role_changed", Some(principal.user_id())),
        "user",
        user,
    );
    event.details = json!({ "from": previous, "to": membership.role });
    tx.audit(event).await?;
    tx.commit().await?;
    if membership.role < previous {
        // A demotion takes effect now, not when the member's access token expires.
        state
            .db
            .revoke_user_sessions_in_tenant(
                user,
                principal.tenant_id(),
                tenantkit_core::now(),
                "demoted",
            )
            .await?;
    }
    Ok(Json(membership))
}

/// `DELETE /v1/members/{user_id}`: removes a member (their sessions in this tenant end at the
/// next refresh, which re-checks the membership).
#[utoipa::path(
    delete,
    path = "/v1/members/{user_id}",
    tag = "members",
    params(("user_id" = uuid::Uuid, Path, description = "The member")),
    responses((status = 204, description = "Removed"), (status = 409, description = "The last owner cannot be removed", body = tenantkit_core::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub(crate) async fn delete_member(
    State(state): State<AppState>,
    client: ClientInfo,
    principal: Principal,
    ApiId(user): ApiId<UserId>,
) -> Result<StatusCode> {
    principal.require(Permission::ManageMembers)?;
    let mut tx = state.db.begin(&TenantScope::of(&principal)).await?;
    let removed = tx.remove_member(user, principal.user_id()).await?;
    let mut event = target(
        client.event("member.removed", Some(principal.user_id())),
        "user",
        user,
    );
    event.details = json!({ "role": removed.role });
    tx.audit(event).await?;
    tx.commit().await?;
    state
        .db
        .revoke_user_sessions_in_tenant(
            user,
            principal.tenant_id(),
            tenantkit_core::now(),
            "removed",
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/audit-log?limit=&cursor=&actor_id=&action=&since=&until=`.
#[utoipa::path(
    get,
    path = "/v1/audit-log",
    tag = "audit",
    params(super::docs::PageParams, super::docs::AuditParams),
    responses((status = 200, description = "Entries, oldest first", body = Page<AuditEntry>)),
    security(("bearer" = []))
)]
pub(crate) async fn audit_log(
    State(state): State<AppState>,
    principal: Principal,
    query: RawQuery,
) -> Result<Json<Page<AuditEntry>>> {
    principal.require(Permission::ReadAuditLog)?;
    let mut errors = Vec::new();
    let page = page_request(
        &query,
        &["actor_id", "action", "since", "until"],
        &mut errors,
    );
    let time = |name: &str, errors: &mut Vec<_>| {
        let raw = query.get(name, errors)?;
        match OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339) {
            // Compared in UTC: SQLite compares stored times as text.
            Ok(at) => Some(at.to_offset(time::UtcOffset::UTC)),
            Err(_) => {
                errors.push(tenantkit_core::FieldError::new(
                    name,
                    "must be an RFC 3339 time",
                ));
                None
            }
        }
    };
    let filter = AuditFilter {
        actor_id: query.parse::<UserId>("actor_id", "must be a user id", &mut errors),
        action: query.get("action", &mut errors).map(str::to_owned),
        since: time("since", &mut errors),
        until: time("until", &mut errors),
    };
    valid(errors)?;
    // The cursor carries the chain position of the last entry seen.
    let after_seq = page.after.map_or(0, |cursor| {
        cursor.key().as_u64_pair().1.min(i64::MAX as u64) as i64
    });
    let limit = i64::from(page.limit.get());
    let mut tx = state.db.begin_read(&TenantScope::of(&principal)).await?;
    let mut items = tx.search_audit(&filter, after_seq, limit + 1).await?;
    tx.commit().await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items
            .last()
            .map(|last| Cursor::after(uuid::Uuid::from_u64_pair(0, last.seq as u64)).encode())
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}
