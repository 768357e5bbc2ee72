//! The OpenAPI 3.1 document (`/openapi.json`), generated from the handlers' `#[utoipa::path]`
//! annotations and the request/response types, and a docs UI at `/docs`.
//!
//! Errors every operation can answer are added by [`StandardProblems`] from what the
//! operation takes, so they cannot be forgotten one route at a time: 401/403 when it needs a
//! token, 404 when its path names a record, 400/413/415/422 when it takes a JSON body, 422 when
//! it takes query parameters.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use tenantkit_core::{
    NewProject, NewTeam, Problem, Project, ProjectPatch, Task, TaskPatch, Team, TeamPatch,
};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, Response, ResponseBuilder};
use utoipa::{IntoParams, Modify, OpenApi};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tenantkit reference server",
        description = "A multi-tenant SaaS backend: tenants, members, invitations, teams, \
                       projects and tasks, with an audit log. Every /v1 route except the public \
                       auth ones needs `Authorization: Bearer <access token>`; errors are \
                       RFC 9457 `application/problem+json` with a stable `code`."
    ),
    paths(
        super::health::healthz,
        super::health::readyz,
        super::health::jwks,
        super::auth::signup,
        super::auth::login,
        super::auth::refresh,
        super::auth::logout,
        super::auth::logout_all,
        super::auth::switch_tenant,
        super::auth::change_password,
        super::auth::me,
        super::recovery::request_reset,
        super::recovery::confirm_reset,
        super::recovery::request_verification,
        super::recovery::confirm_verification,
        super::tenancy::get_tenant,
        super::tenancy::patch_tenant,
        super::tenancy::list_members,
        super::tenancy::patch_member,
        super::tenancy::delete_member,
        super::tenancy::audit_log,
        super::invitations::invite,
        super::invitations::list,
        super::invitations::revoke,
        super::invitations::accept,
        super::teams::list,
        create_team,
        get_team,
        update_team,
        delete_team,
        super::teams::members,
        super::teams::add_member,
        super::teams::remove_member,
        super::projects::list,
        create_project,
        get_project,
        update_project,
        delete_project,
        super::tasks::list,
        super::tasks::create,
        get_task,
        update_task,
        delete_task,
    ),
    components(schemas(Problem)),
    modifiers(&BearerScheme, &StandardProblems),
    tags(
        (name = "auth", description = "Sign up, log in, tokens, sessions, passwords"),
        (name = "tenant", description = "The caller's tenant"),
        (name = "members", description = "Members of the tenant and their roles"),
        (name = "invitations", description = "Inviting teammates by email"),
        (name = "teams", description = "Groups of members; restricted projects belong to one"),
        (name = "projects", description = "Projects (ETag / If-Match)"),
        (name = "tasks", description = "Tasks inside projects (ETag / If-Match)"),
        (name = "audit", description = "The tamper-evident audit log"),
        (name = "health", description = "Probes and public keys"),
    )
)]
pub(crate) struct ApiDoc;

/// The document, built once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|_| String::from("{}"))
});

/// `GET /openapi.json`.
pub(crate) async fn openapi_json() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        DOCUMENT.as_str(),
    )
}

/// `GET /docs`: Scalar's API reference over `/openapi.json`. The page loads its script from
/// the jsDelivr CDN, so this route alone gets a content security policy that allows it.
pub(crate) async fn docs_page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src https://cdn.jsdelivr.net; \
                 style-src 'unsafe-inline' https://cdn.jsdelivr.net; \
                 font-src https://cdn.jsdelivr.net data:; img-src data: https:; \
                 connect-src 'self'; frame-ancestors 'none'",
            ),
        ],
        DOCS_HTML,
    )
}

const DOCS_HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>tenantkit API</title>
</head>
<body>
  <script id="api-reference" data-url="/openapi.json"></script>
  <script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference@1"></script>
  <noscript>The machine-readable document is at <a href="/openapi.json">/openapi.json</a>.</noscript>
</body>
</html>
"#;

/// `limit` and `cursor`, on every list.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Documentation of what `page_request` reads.
pub(crate) struct PageParams {
    /// Page size, 1 to 100 (default 20); out of range is 422, never capped.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Filters of `GET /v1/audit-log`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct AuditParams {
    /// Only entries by this user.
    #[param(format = Uuid)]
    actor_id: Option<String>,
    /// Only this action, e.g. `project.created`.
    action: Option<String>,
    /// Only entries at or after this time (RFC 3339, e.g. `2026-01-31T12:00:00Z`).
    since: Option<String>,
    /// Only entries before this time (RFC 3339).
    until: Option<String>,
}

/// Filters of `GET /v1/teams`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct TeamParams {
    /// Only teams this user is in.
    #[param(format = Uuid)]
    member: Option<String>,
}

/// Filters of `GET /v1/projects`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct ProjectParams {
    /// Only projects of this team.
    #[param(format = Uuid)]
    team_id: Option<String>,
}

/// Filters of `GET /v1/projects/{id}/tasks`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct TaskParams {
    /// Only tasks in this status.
    #[param(inline)]
    status: Option<tenantkit_core::TaskStatus>,
    /// Only tasks assigned to this user.
    #[param(format = Uuid)]
    assignee_id: Option<String>,
    /// Only tasks whose title contains this text, case-insensitively (at most 200 characters).
    #[param(max_length = 200)]
    q: Option<String>,
}

/// Documents the generic record handlers (`records::{create, get, update, delete}`) for one
/// resource: utoipa cannot annotate a generic function once per type argument.
macro_rules! record_docs {
    (
        $record:ident, $patch:ident, $tag:tt, $path:tt,
        get: $get:ident, update: $update:ident, delete: $delete:ident
    ) => {
        /// Reads one record; its `ETag` is the version to send back in `If-Match`.
        #[utoipa::path(
            get,
            path = $path,
            tag = $tag,
            params(("id" = uuid::Uuid, Path, description = "The record")),
            responses(
                (status = 200, description = "The record", body = $record,
                 headers(("ETag" = String, description = "The version, for If-Match")))
            ),
            security(("bearer" = []))
        )]
        #[allow(dead_code)]
        fn $get() {}

        /// Changes some fields (absent ones stay; `null` clears an optional one). With
        /// `If-Match`, only if the record is still at that version.
        #[utoipa::path(
            patch,
            path = $path,
            tag = $tag,
            params(
                ("id" = uuid::Uuid, Path, description = "The record"),
                ("If-Match" = Option<String>, Header, description = "The ETag last read")
            ),
            request_body(content = $patch, content_type = "application/json"),
            responses(
                (status = 200, description = "The changed record", body = $record,
                 headers(("ETag" = String, description = "The new version"))),
                (status = 409, description = "A unique value is taken", body = Problem,
                 content_type = "application/problem+json"),
                (status = 412, description = "Changed since the If-Match version", body = Problem,
                 content_type = "application/problem+json")
            ),
            security(("bearer" = []))
        )]
        #[allow(dead_code)]
        fn $update() {}

        /// Deletes the record; with `If-Match`, only if it is still at that version.
        #[utoipa::path(
            delete,
            path = $path,
            tag = $tag,
            params(
                ("id" = uuid::Uuid, Path, description = "The record"),
                ("If-Match" = Option<String>, Header, description = "The ETag last read")
            ),
            responses(
                (status = 204, description = "Deleted"),
                (status = 412, description = "Changed since the If-Match version", body = Problem,
                 content_type = "application/problem+json")
            ),
            security(("bearer" = []))
        )]
        #[allow(dead_code)]
        fn $delete() {}
    };
}

/// Documents `records::create` for one resource.
macro_rules! create_docs {
    ($record:ident, $new:ident, $tag:tt, $path:tt, $create:ident) => {
        /// Creates a record.
        #[utoipa::path(
                    post,
                    path = $path,
                    tag = $tag,
                    request_body(content = $new, content_type = "application/json"),
                    responses(
                        (status = 201, description = "Created", body = $record,
                         headers(
                             ("ETag" = String, description = "The version, for If-Match"),
                             ("Location" = String, description = "Where the new record lives")
                         )),
                        (status = 409, description = "A unique value is taken", body = Problem,
                         content_type = "application/problem+json")
                    ),
                    security(("bearer" = []))
                )]
        #[allow(dead_code)]
        fn $create() {}
    };
}

create_docs!(
    Project,
    NewProject,
    "projects",
    "/v1/projects",
    create_project
);
record_docs!(Project, ProjectPatch, "projects", "/v1/projects/{id}",
    get: get_project, update: update_project, delete: delete_project);
record_docs!(Task, TaskPatch, "tasks", "/v1/tasks/{id}",
    get: get_task, update: update_task, delete: delete_task);
create_docs!(Team, NewTeam, "teams", "/v1/teams", create_team);
record_docs!(Team, TeamPatch, "teams", "/v1/teams/{id}",
    get: get_team, update: update_team, delete: delete_team);

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
