//! The HTTP routes of the reference server.
//!
//! Every API route is registered through utoipa-axum's `routes!`, which reads the method and
//! path from the handler's `#[utoipa::path]`: a route and its OpenAPI entry are one
//! declaration, so the router and the document cannot disagree. The only routes outside the
//! document are the document itself (`/openapi.json`) and its viewer (`/docs`).

mod auth;
mod billing;
mod docs;
mod files;
mod health;
mod invitations;
mod projects;
mod realtime;
pub(crate) mod records;
mod recovery;
mod sso;
mod tasks;
mod teams;
mod tenancy;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tenantkit_auth::routes::AuthRoutes;
use tenantkit_auth::{CachedSessionCheck, JwtAuthLayer, StrictJwtAuthLayer};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

/// The routes that are not part of the API document: the document and its viewer.
pub const UNDOCUMENTED_ROUTES: &[(&str, &str)] = &[("get", "/openapi.json"), ("get", "/docs")];

/// Every route (without the cross-cutting layers, see [`crate::app`]) and the finished OpenAPI
/// document, as JSON.
pub(crate) fn router(state: &AppState, config: &crate::Config) -> (Router<AppState>, Arc<str>) {
    let public = OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::jwks))
        // Bearer or ticket: the library authenticates the handshake itself.
        .routes(routes!(realtime::connect))
        .routes(routes!(recovery::request_reset))
        .routes(routes!(recovery::confirm_reset))
        .routes(routes!(recovery::confirm_verification))
        .routes(routes!(sso::login))
        .routes(routes!(sso::initiate))
        .routes(routes!(sso::open_link))
        .routes(routes!(sso::callback))
        .routes(routes!(sso::exchange))
        .routes(routes!(sso::discover))
        .routes(billing::webhook(state));
    // tenantkit-auth's signup, login, refresh, logout and logout-all; logout-all verifies its
    // caller with the protected routes' layer.
    let library = AuthRoutes::new(state.auth.clone()).with_trusted_proxies(state.proxies.clone());
    // `route_layer`, so an unknown path stays a 404 rather than becoming a 401.
    let tokens = state.auth.tokens().clone();
    let (protected, library) = match config.session_check {
        crate::SessionCheckMode::Strict => {
            let check = CachedSessionCheck::with_ttl(
                Arc::new(state.auth.sessions().clone()),
                config.session_check_ttl(),
            )
            .with_revocations(state.auth.sessions().revocations());
            let layer = StrictJwtAuthLayer::new(tokens.clone(), check);
            (
                protected().route_layer(layer.clone()),
                library.with_auth_layer(layer),
            )
        }
        crate::SessionCheckMode::Off => {
            let layer = JwtAuthLayer::new(tokens.clone());
            (
                protected().route_layer(layer.clone()),
                library.with_auth_layer(layer),
            )
        }
    };
    let public = auth::library_routes(&library)
        .into_iter()
        .fold(public, OpenApiRouter::routes);
    // Accepting works with or without a token: with one, for that account.
    let accept = OpenApiRouter::new()
        .routes(routes!(invitations::accept))
        .route_layer(JwtAuthLayer::optional(tokens));
    let (router, document) = public.merge(protected).merge(accept).split_for_parts();
    let router = router
        .route("/openapi.json", get(docs::openapi_json))
        .route("/docs", get(docs::docs_page));
    (router, docs::finish(document))
}

/// The routes that need a verified caller.
fn protected() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(auth::switch_tenant))
        .routes(routes!(auth::change_password))
        .routes(routes!(recovery::request_verification))
        .routes(routes!(auth::me))
        .routes(routes!(tenancy::get_tenant, tenancy::patch_tenant))
        .routes(routes!(tenancy::list_members))
        .routes(routes!(tenancy::patch_member, tenancy::delete_member))
        .routes(routes!(tenancy::audit_log))
        .routes(routes!(invitations::invite, invitations::list))
        .routes(routes!(invitations::revoke))
        .routes(routes!(teams::list, teams::create))
        .routes(routes!(teams::get, teams::update, teams::delete))
        .routes(routes!(teams::members, teams::add_member))
        .routes(routes!(teams::remove_member))
        .routes(routes!(projects::list, projects::create))
        .routes(routes!(projects::get, projects::update, projects::delete))
        .routes(routes!(tasks::list, tasks::create))
        .routes(routes!(tasks::get, tasks::update, tasks::delete))
        .routes(routes!(billing::get_billing))
        .routes(routes!(billing::checkout))
        .routes(routes!(billing::portal))
        .routes(routes!(files::create_upload))
        .routes(routes!(files::complete_upload))
        .routes(routes!(files::list_files))
        .routes(routes!(files::get_file, files::delete_file))
        .routes(routes!(realtime::ticket))
        .routes(routes!(sso::create_connection, sso::list_connections))
        .routes(routes!(sso::delete_connection))
        .routes(routes!(sso::link))
}

/// The routes answering local storage's signed URLs (outside the API document: their
/// signature is their authorization), or none with another backend. They sit outside the
/// API's body limit and request timeout: the signed size bounds the body, and the service
/// streams it.
pub const SIGNED_URL_ROUTES: &[(&str, &str)] = &[
    ("put", "/v1/storage/upload/{token}"),
    ("get", "/v1/storage/download/{token}"),
];

/// The router of [`SIGNED_URL_ROUTES`]: tenantkit-storage's, nested where the local store's
/// URLs point (`<public url>/v1/storage`).
pub(crate) fn signed_url_routes(state: &AppState) -> Option<Router> {
    let service = state.local_storage.clone()?;
    Some(Router::new().nest(
        "/v1/storage",
        tenantkit_storage::axum::local_routes(service),
    ))
}

#[cfg(test)]
mod tests {
    /// The route modules, as source: none may add a route around utoipa-axum's `routes!`.
    const ROUTE_MODULES: &[(&str, &str)] = &[
        ("auth.rs", include_str!("auth.rs")),
        ("billing.rs", include_str!("billing.rs")),
        ("docs.rs", include_str!("docs.rs")),
        ("files.rs", include_str!("files.rs")),
        ("health.rs", include_str!("health.rs")),
        ("invitations.rs", include_str!("invitations.rs")),
        ("projects.rs", include_str!("projects.rs")),
        ("realtime.rs", include_str!("realtime.rs")),
        ("records.rs", include_str!("records.rs")),
        ("recovery.rs", include_str!("recovery.rs")),
        ("tasks.rs", include_str!("tasks.rs")),
        ("teams.rs", include_str!("teams.rs")),
        ("tenancy.rs", include_str!("tenancy.rs")),
    ];

    #[test]
    fn routes_are_only_added_with_their_documentation() {
        for (name, source) in ROUTE_MODULES {
            for forbidden in [".route(", ".route_service(", ".nest(", "Router::new("] {
                assert!(
                    !source.contains(forbidden),
                    "{name} adds a route with `{forbidden}`, outside the OpenAPI document"
                );
            }
        }
        let this = include_str!("mod.rs");
        let direct: Vec<&str> = this
            .lines()
            .filter(|line| line.trim_start().starts_with(".route(\""))
            .collect();
        // The signed storage URLs (`SIGNED_URL_ROUTES`) are tenantkit-storage's router, nested.
        assert_eq!(
            direct.len(),
            super::UNDOCUMENTED_ROUTES.len(),
            "only the document and its viewer are routed outside it: {direct:?}"
        );
    }
}
