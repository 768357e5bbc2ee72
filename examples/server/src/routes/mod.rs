//! The HTTP routes of the reference server.

mod auth;
mod docs;
mod health;
mod invitations;
mod projects;
mod records;
mod recovery;
mod tasks;
mod teams;
mod tenancy;

use axum::routing::{get, post};
use axum::Router;
use tenantkit_core::{Error, FieldError, PageRequest, Project, Task, Team};

use std::sync::Arc;

use tenantkit_auth::{CachedRevocation, JwtAuthLayer, StrictJwtAuthLayer};

use crate::extract::RawQuery;
use crate::AppState;

/// Every route, without the cross-cutting layers (see [`crate::app`]).
pub(crate) fn routes(state: &AppState, config: &crate::Config) -> Router<AppState> {
    let public = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/.well-known/jwks.json", get(health::jwks))
        .route("/openapi.json", get(docs::openapi_json))
        .route("/docs", get(docs::docs_page))
        .route("/v1/auth/signup", post(auth::signup))
        .route("/v1/auth/login", post(auth::login))
        .route("/v1/auth/refresh", post(auth::refresh))
        .route("/v1/auth/logout", post(auth::logout))
        .route(
            "/v1/auth/password-reset/request",
            post(recovery::request_reset),
        )
        .route(
            "/v1/auth/password-reset/confirm",
            post(recovery::confirm_reset),
        )
        .route(
            "/v1/auth/verify-email/confirm",
            post(recovery::confirm_verification),
        );
    let protected = if config.strict_sessions {
        let revocation = CachedRevocation::new(Arc::new(state.db.clone()));
        protected().route_layer(StrictJwtAuthLayer::new(state.tokens.clone(), revocation))
    } else {
        protected().route_layer(JwtAuthLayer::new(state.tokens.clone()))
    };
    // Accepting works with or without a token: with one, for that account.
    let accept = Router::new()
        .route("/v1/invitations/accept", post(invitations::accept))
        .route_layer(JwtAuthLayer::optional(state.tokens.clone()));
    public.merge(protected).merge(accept)
}

/// The routes that need a verified caller. `route_layer` so an unknown path stays a 404
/// rather than becoming a 401.
fn protected() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/logout-all", post(auth::logout_all))
        .route("/v1/auth/switch-tenant", post(auth::switch_tenant))
        .route("/v1/auth/password", post(auth::change_password))
        .route(
            "/v1/auth/verify-email/request",
            post(recovery::request_verification),
        )
        .route("/v1/me", get(auth::me))
        .route(
            "/v1/tenant",
            get(tenancy::get_tenant).patch(tenancy::patch_tenant),
        )
        .route("/v1/members", get(tenancy::list_members))
        .route(
            "/v1/members/{id}",
            axum::routing::patch(tenancy::patch_member).delete(tenancy::delete_member),
        )
        .route("/v1/audit-log", get(tenancy::audit_log))
        .route(
            "/v1/invitations",
            post(invitations::invite).get(invitations::list),
        )
        .route(
            "/v1/invitations/{id}",
            axum::routing::delete(invitations::revoke),
        )
        .route("/v1/teams", get(teams::list).post(records::create::<Team>))
        .route(
            "/v1/teams/{id}",
            get(records::get::<Team>)
                .patch(records::update::<Team>)
                .delete(records::delete::<Team>),
        )
        .route(
            "/v1/teams/{id}/members",
            get(teams::members).post(teams::add_member),
        )
        .route(
            "/v1/teams/{id}/members/{user_id}",
            axum::routing::delete(teams::remove_member),
        )
        .route(
            "/v1/projects",
            get(projects::list).post(records::create::<Project>),
        )
        .route(
            "/v1/projects/{id}",
            get(records::get::<Project>)
                .patch(records::update::<Project>)
                .delete(records::delete::<Project>),
        )
        .route(
            "/v1/projects/{id}/tasks",
            get(tasks::list).post(tasks::create),
        )
        .route(
            "/v1/tasks/{id}",
            get(records::get::<Task>)
                .patch(records::update::<Task>)
                .delete(records::delete::<Task>),
        )
}

/// Reads `limit` and `cursor`, and rejects any parameter that is neither those nor one of
/// `filters`; problems are added to `errors`.
pub(crate) fn page_request(
    query: &RawQuery,
    filters: &[&str],
    errors: &mut Vec<FieldError>,
) -> PageRequest {
    let limit = query.parse::<u32>("limit", "must be an integer between 1 and 100", errors);
    let cursor = query.get("cursor", errors);
    let known: Vec<&str> = ["limit", "cursor"].iter().chain(filters).copied().collect();
    query.reject_unknown(&known, errors);
    match PageRequest::from_query(limit, cursor) {
        Ok(page) => page,
        Err(Error::Validation(more)) => {
            errors.extend(more);
            PageRequest::default()
        }
        Err(_) => PageRequest::default(),
    }
}

/// `Ok` when no field error was found, else one 422 with all of them.
pub(crate) fn valid(errors: Vec<FieldError>) -> Result<(), Error> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Validation(errors))
    }
}
