//! `/v1/tenant`, `/v1/members` and `/v1/audit-log`: managing the caller's tenant.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tenantkit_auth::flows::{TenantPolicy, TenantPolicyPatch};
use tenantkit_core::{
    AuditEntry, AuditFilter, Cursor, Membership, Page, Permission, Principal, Role, Tenant,
    TenantScope, UserId,
};
use time::OffsetDateTime;
use utoipa::IntoParams;

use crate::extract::{ApiId, ApiJson, Client, Listing, NoFilter, PageQuery, QueryFilter};
use crate::{AppState, Result};

/// The caller's tenant with its sign-in policy, in one flat object.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TenantView {
    #[serde(flatten)]
    tenant: Tenant,
    #[serde(flatten)]
    policy: TenantPolicy,
}

/// `GET /v1/tenant`.
#[utoipa::path(
    get,
    path = "/v1/tenant",
    tag = "tenant",
    responses((status = 200, description = "The caller's tenant and its sign-in policy", body = TenantView)),
    security(("bearer" = []))
)]
pub(crate) async fn get_tenant(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<TenantView>> {
    principal.require(Permission::Read)?;
    let mut tx = state.db.begin_read(&TenantScope::of(&principal)).await?;
    let tenant = tx.tenant().await?;
    let policy = state.auth.tenant_policy(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(TenantView { tenant, policy }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub(crate) struct TenantPatch {
    /// A new display name (admin+).
    #[serde(default)]
    name: Option<String>,
    /// Every sign-in into the tenant gives a second factor (owner only; turning it on needs a
    /// session that gave one, and ends the tenant's sessions that did not).
    #[serde(default)]
    mfa_required: Option<bool>,
    /// Members sign in through the tenant's identity provider only (owner only; needs a
    /// connection; ends the sessions of non-owners that did not sign in through it). Owners
    /// keep an audited password sign-in.
    #[serde(default)]
    sso_required: Option<bool>,
}

/// `PATCH /v1/tenant`: renames the tenant (the slug is immutable) and sets its sign-in policy.
#[utoipa::path(
    patch,
    path = "/v1/tenant",
    tag = "tenant",
    request_body(content = TenantPatch, content_type = "application/json"),
    responses((status = 200, description = "Changed", body = TenantView), (status = 401, description = "Turning mfa_required on from a session without a second factor (insufficient_user_authentication)", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 403, description = "Not an admin (name) or not the owner (the policy)", body = tenantkit_core::Problem, content_type = "application/problem+json"), (status = 409, description = "sso_required without a single sign-on connection", body = tenantkit_core::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub(crate) async fn patch_tenant(
    State(state): State<AppState>,
    client: Client,
    principal: Principal,
    ApiJson(body): ApiJson<TenantPatch>,
) -> Result<Json<TenantView>> {
    principal.require(Permission::ManageTenant)?;
    let mut tx = state.db.begin(&TenantScope::of(&principal)).await?;
    let before = tx.tenant().await?;
    let tenant = match &body.name {
        Some(name) => {
            let tenant = tx.rename_tenant(name).await?;
            let event = client
                .event("tenant.updated", Some(principal.user_id()))
                .target("tenant", tenant.id)
                .details(json!({ "name": { "from": before.name, "to": tenant.name } }));
            tx.audit(event).await?;
            tenant
        }
        None => before,
    };
    let mut patch = TenantPolicyPatch::default();
    patch.mfa_required = body.mfa_required;
    patch.sso_required = body.sso_required;
    let policy = if patch.is_empty() {
        state.auth.tenant_policy(&mut tx).await?
    } else {
        (state.auth)
            .update_tenant_policy(&mut tx, &client, &principal, patch)
            .await?
    };
    tx.commit().await?;
    Ok(Json(TenantView { tenant, policy }))
}

/// `GET /v1/members`.
#[utoipa::path(
    get,
    path = "/v1/members",
    tag = "members",
    params(PageQuery),
    responses((status = 200, description = "Members with their roles", body = Page<tenantkit_core::Member>)),
    security(("bearer" = []))
)]
pub(crate) async fn list_members(
    State(state): State<AppState>,
    principal: Principal,
    query: Listing<NoFilter>,
) -> Result<Json<Page<tenantkit_core::Member>>> {
    principal.require(Permission::Read)?;
    let mut tx = state.db.begin_read(&TenantScope::of(&principal)).await?;
    let members = tx.members(query.page).await?;
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
    client: Client,
    principal: Principal,
    ApiId(user): ApiId<UserId>,
    ApiJson(body): ApiJson<RolePatch>,
) -> Result<Json<Membership>> {
    let membership = state
        .auth
        .change_member_role(&client, &principal, user, body.role)
        .await?;
    Ok(Json(membership))
}

/// `DELETE /v1/members/{user_id}`: removes a member; their sessions in this tenant end with it.
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
    client: Client,
    principal: Principal,
    ApiId(user): ApiId<UserId>,
) -> Result<StatusCode> {
    state.auth.remove_member(&client, &principal, user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Filters of `GET /v1/audit-log`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Only entries by this user.
    #[param(inline)]
    actor_id: Option<UserId>,
    /// Only this action, e.g. `project.created`.
    #[param(max_length = 100)]
    action: Option<String>,
    /// Only entries at or after this time (RFC 3339, e.g. `2026-01-31T12:00:00Z`).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<OffsetDateTime>,
    /// Only entries before this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<OffsetDateTime>,
}

impl QueryFilter for AuditQuery {
    fn check(&self, errors: &mut Vec<tenantkit_core::FieldError>) {
        if self
            .action
            .as_deref()
            .is_some_and(|a| a.chars().count() > 100)
        {
            errors.push(tenantkit_core::FieldError::new(
                "action",
                "must be at most 100 characters",
            ));
        }
    }
}

/// `GET /v1/audit-log?limit=&cursor=&actor_id=&action=&since=&until=`.
#[utoipa::path(
    get,
    path = "/v1/audit-log",
    tag = "audit",
    params(PageQuery, AuditQuery),
    responses((status = 200, description = "Entries, oldest first", body = Page<AuditEntry>)),
    security(("bearer" = []))
)]
pub(crate) async fn audit_log(
    State(state): State<AppState>,
    principal: Principal,
    query: Listing<AuditQuery>,
) -> Result<Json<Page<AuditEntry>>> {
    principal.require(Permission::ReadAuditLog)?;
    // Compared in UTC: SQLite compares stored times as text.
    let utc = |at: Option<OffsetDateTime>| at.map(|at| at.to_offset(time::UtcOffset::UTC));
    let filter = AuditFilter {
        actor_id: query.filter.actor_id,
        action: query.filter.action,
        since: utc(query.filter.since),
        until: utc(query.filter.until),
    };
    let page = query.page;
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
