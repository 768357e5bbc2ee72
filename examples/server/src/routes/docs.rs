//! The OpenAPI 3.1 document (`/openapi.json`), made from the routes as they are registered
//! (utoipa-axum: a route and its `#[utoipa::path]` entry are declared once), and a docs UI at
//! `/docs`.
//!
//! Errors every operation can answer are added by [`StandardProblems`] from what the
//! operation takes, so they cannot be forgotten one route at a time: 401/403 when it needs a
//! token, 404 when its path names a record, 400/413/415/422 when it takes a JSON body, 422 when
//! it takes query parameters.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use tenantkit_core::Problem;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::AppState;

/// The document's frame: title, tags, the problem schema and the bearer scheme. The
/// operations come from the routes themselves ([`super::router`]), each declared once.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tenantkit reference server",
        description = "A multi-tenant SaaS backend: tenants, members, invitations, teams, \
                       projects and tasks, with an audit log. Every /v1 route except the public \
                       auth ones needs `Authorization: Bearer <access token>`; errors are \
                       RFC 9457 `application/problem+json` with a stable `code`."
    ),
    components(schemas(Problem)),
    modifiers(&BearerScheme),
    tags(
        (name = "auth", description = "Sign up, log in, tokens, sessions, passwords"),
        (name = "tenant", description = "The caller's tenant"),
        (name = "members", description = "Members of the tenant and their roles"),
        (name = "invitations", description = "Inviting teammates by email"),
        (name = "teams", description = "Groups of members; restricted projects belong to one"),
        (name = "projects", description = "Projects (ETag / If-Match)"),
        (name = "tasks", description = "Tasks inside projects (ETag / If-Match)"),
        (name = "files", description = "Direct-to-storage uploads (signed intents, verified results) and files"),
        (name = "billing", description = "Stripe webhooks into a durable inbox"),
        (name = "audit", description = "The tamper-evident audit log"),
        (name = "health", description = "Probes and public keys"),
    )
)]
pub(crate) struct ApiDoc;

/// The finished document as JSON: the routes' operations plus the problem answers every
/// operation can give ([`StandardProblems`]).
pub(crate) fn finish(mut document: utoipa::openapi::OpenApi) -> Arc<str> {
    StandardProblems.modify(&mut document);
    document
        .to_json()
        .unwrap_or_else(|_| String::from("{}"))
        .into()
}

/// `GET /openapi.json`.
pub(crate) async fn openapi_json(State(state): State<AppState>) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        state.openapi.to_string(),
    )
}

/// The viewer script: one pinned release of `@scalar/api-reference`, the file its npm tarball
/// ships as `dist/browser/standalone.js` (jsDelivr serves npm files unchanged).
pub(crate) const DOCS_SCRIPT_URL: &str =
    "https://cdn.jsdelivr.net/npm/@scalar/api-reference@1.76.0/dist/browser/standalone.js";

/// The Subresource Integrity hash of [`DOCS_SCRIPT_URL`]: the browser refuses the script if
/// the CDN serves anything else. Recompute it with `bash scripts/docs-sri.sh <version>` when
/// upgrading.
pub(crate) const DOCS_SCRIPT_INTEGRITY: &str =
    "sha384-oH1C0RwqcwbVXkC+r8A+4qRoyEUQdtxAzOwumkxZtQBBcsy61FOoPt7B50OVJYYQ";

/// `GET /docs`: Scalar's API reference over `/openapi.json`. The page loads one pinned script
/// from the jsDelivr CDN, checked by its SRI hash, so this route alone gets a content security
/// policy that allows exactly that file (and no images from anywhere but the page itself).
pub(crate) async fn docs_page() -> impl IntoResponse {
    static PAGE: std::sync::LazyLock<(HeaderValue, String)> = std::sync::LazyLock::new(|| {
        let csp = format!(
            "default-src 'none'; script-src {DOCS_SCRIPT_URL}; style-src 'unsafe-inline'; \
             font-src data:; img-src data:; connect-src 'self'; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'"
        );
        let html = format!(
            r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>tenantkit API</title>
</head>
<body>
  <script id="api-reference" data-url="/openapi.json"></script>
  <script src="{DOCS_SCRIPT_URL}" integrity="{DOCS_SCRIPT_INTEGRITY}" crossorigin="anonymous"></script>
  <noscript>The machine-readable document is at <a href="/openapi.json">/openapi.json</a>.</noscript>
</body>
</html>
"#
        );
        (
            HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static("default-src 'none'")),
            html,
        )
    });
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, PAGE.0.clone()),
        ],
        PAGE.1.as_str(),
    )
}

/// The bearer scheme the `security(("bearer" = []))` requirements name.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from signup, login, refresh or switch-tenant.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Adds the problem answers every operation can give, from what it takes.
struct StandardProblems;

fn problem(description: &str) -> RefOr<Response> {
    let schema = RefOr::Ref(utoipa::openapi::Ref::from_schema_name("Problem"));
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                tenantkit_core::PROBLEM_JSON,
                ContentBuilder::new().schema(Some(schema)).build(),
            )
            .build(),
    )
}

impl StandardProblems {
    fn add(path: &str, operation: &mut Operation) {
        let secured = operation
            .security
            .as_ref()
            .is_some_and(|requirements| !requirements.is_empty());
        let takes_body = operation.request_body.is_some();
        let parameters = operation.parameters.as_deref().unwrap_or_default();
        let takes_query = parameters
            .iter()
            .any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query));
        let mut add = |status: &str, description: &str| {
            operation
                .responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| problem(description));
        };
        if secured {
            add("401", "No, an invalid or an expired access token");
            add("403", "The caller's role does not allow this");
        }
        if path.contains('{') {
            add(
                "404",
                "No such record in the caller's tenant (another tenant's answers the same)",
            );
        }
        if takes_body {
            add("400", "Malformed JSON");
            add("413", "The body is over the limit");
            add("415", "The body is not application/json");
            add("422", "Invalid fields, listed in `errors`");
        }
        if takes_query {
            add(
                "422",
                "Invalid or unknown query parameters, listed in `errors`",
            );
        }
    }
}

impl Modify for StandardProblems {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                Self::add(path, operation);
            }
        }
    }
}
