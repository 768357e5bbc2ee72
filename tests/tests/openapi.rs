//! The OpenAPI document: 3.1, every route of the contract with its schemas, no dangling
//! references, and a docs page.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tenantkit_core::Backend;
use tenantkit_e2e::TestServer;

/// Every operation of the HTTP contract the server implements.
const OPERATIONS: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/.well-known/jwks.json"),
    ("post", "/v1/auth/signup"),
    ("post", "/v1/auth/login"),
    ("post", "/v1/auth/refresh"),
    ("post", "/v1/auth/logout"),
    ("post", "/v1/auth/logout-all"),
    ("post", "/v1/auth/mfa/verify"),
    ("post", "/v1/auth/mfa/enroll"),
    ("post", "/v1/auth/mfa/enroll/confirm"),
    ("post", "/v1/auth/sso/exchange"),
    ("get", "/v1/sso/{tenant_slug}/login"),
    ("get", "/v1/sso/{tenant_slug}/initiate"),
    ("post", "/v1/sso/link"),
    ("get", "/v1/sso/link/{ticket}"),
    ("get", "/v1/sso/callback"),
    ("post", "/v1/sso/discover"),
    ("post", "/v1/sso/connections"),
    ("get", "/v1/sso/connections"),
    ("delete", "/v1/sso/connections/{id}"),
    ("post", "/v1/auth/mfa/totp"),
    ("delete", "/v1/auth/mfa/totp"),
    ("post", "/v1/auth/mfa/totp/confirm"),
    ("post", "/v1/auth/switch-tenant"),
    ("post", "/v1/auth/password"),
    ("post", "/v1/auth/password-reset/request"),
    ("post", "/v1/auth/password-reset/confirm"),
    ("post", "/v1/auth/verify-email/request"),
    ("post", "/v1/auth/verify-email/confirm"),
    ("get", "/v1/me"),
    ("get", "/v1/tenant"),
    ("patch", "/v1/tenant"),
    ("get", "/v1/members"),
    ("patch", "/v1/members/{user_id}"),
    ("delete", "/v1/members/{user_id}"),
    ("get", "/v1/invitations"),
    ("post", "/v1/invitations"),
    ("delete", "/v1/invitations/{id}"),
    ("post", "/v1/invitations/accept"),
    ("get", "/v1/teams"),
    ("post", "/v1/teams"),
    ("get", "/v1/teams/{id}"),
    ("patch", "/v1/teams/{id}"),
    ("delete", "/v1/teams/{id}"),
    ("get", "/v1/teams/{id}/members"),
    ("post", "/v1/teams/{id}/members"),
    ("delete", "/v1/teams/{id}/members/{user_id}"),
    ("get", "/v1/projects"),
    ("post", "/v1/projects"),
    ("get", "/v1/projects/{id}"),
    ("patch", "/v1/projects/{id}"),
    ("delete", "/v1/projects/{id}"),
    ("get", "/v1/projects/{id}/tasks"),
    ("post", "/v1/projects/{id}/tasks"),
    ("get", "/v1/tasks/{id}"),
    ("patch", "/v1/tasks/{id}"),
    ("delete", "/v1/tasks/{id}"),
    ("get", "/v1/audit-log"),
    ("post", "/v1/billing/stripe/webhook"),
    ("get", "/v1/billing"),
    ("post", "/v1/billing/checkout"),
    ("post", "/v1/billing/portal"),
    ("post", "/v1/uploads"),
    ("get", "/v1/realtime"),
    ("post", "/v1/realtime/ticket"),
    ("post", "/v1/uploads/{id}/complete"),
    ("get", "/v1/files"),
    ("get", "/v1/files/{id}"),
    ("delete", "/v1/files/{id}"),
];

fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(target)) => found.push(target),
                    _ => refs(inner, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_covers_every_route_with_schemas_and_security() {
    let server = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let reply = server.call(None, Method::GET, "/openapi.json", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let doc = reply.body;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = Vec::new();
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("path item") {
            documented.push((method.clone(), path.clone()));
            let responses = operation["responses"].as_object().expect("responses");
            assert!(
                // 101: the WebSocket handshake's success; 302: single sign-on's redirects.
                responses
                    .keys()
                    .any(|status| status.starts_with('2') || status == "101" || status == "302"),
                "{method} {path} documents no success"
            );
            let secured = operation
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
            let public = path.starts_with("/v1/auth/")
                && !matches!(
                    path.as_str(),
                    "/v1/auth/logout-all"
                        | "/v1/auth/switch-tenant"
                        | "/v1/auth/password"
                        | "/v1/auth/verify-email/request"
                )
                || !path.starts_with("/v1/")
                // Stripe's deliveries authenticate by their signature, not a bearer token.
                || path == "/v1/billing/stripe/webhook"
                // Single sign-on's browser steps and discovery come before any token.
                || (path.starts_with("/v1/sso/")
                    && !path.starts_with("/v1/sso/connections")
                    && path != "/v1/sso/link");
            if !public {
                assert!(secured, "{method} {path} lacks the bearer requirement");
                assert!(responses.contains_key("401"), "{method} {path} lacks 401");
            }
            if path.contains('{') {
                assert!(responses.contains_key("404"), "{method} {path} lacks 404");
            }
            if operation.get("requestBody").is_some() {
                let body = &operation["requestBody"]["content"]["application/json"]["schema"];
                assert!(!body.is_null(), "{method} {path} has no JSON body schema");
                for status in ["400", "413", "415", "422"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path} lacks {status}"
                    );
                }
            }
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/problem+json"]["schema"];
                    assert_eq!(
                        schema["$ref"], "#/components/schemas/Problem",
                        "{method} {path} {status} is not a problem"
                    );
                }
            }
        }
    }
    for (method, path) in OPERATIONS {
        assert!(
            documented.contains(&(method.to_string(), path.to_string())),
            "{method} {path} is not documented"
        );
    }
    assert_eq!(documented.len(), OPERATIONS.len(), "{documented:?}");

    // Every reference resolves.
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for target in found {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {target}"));
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "dangling reference {target}"
        );
    }

    // Request bodies are closed: unknown fields are refused, and the schema says so.
    let new_project = &doc["components"]["schemas"]["NewProject"];
    assert_eq!(new_project["additionalProperties"], false);
    assert!(new_project["properties"].get("tenant_id").is_none());
    let project = &doc["components"]["schemas"]["Project"];
    assert!(project["properties"].get("restricted").is_some());
    assert!(project["properties"].get("tenant_id").is_none());
    let problem = &doc["components"]["schemas"]["Problem"];
    assert!(problem["properties"].get("code").is_some());
    // Secrets are documented as such.
    let login = &doc["components"]["schemas"]["LoginRequest"];
    assert_eq!(login["properties"]["password"]["format"], "password");

    let docs = server
        .anonymous(Method::GET, "/docs")
        .send()
        .await
        .expect("send");
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(
        docs.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/html")
    );
    let csp = docs.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_owned();
    // One pinned file, checked by its hash; no images or fonts from anywhere.
    let script = "https://cdn.jsdelivr.net/npm/@scalar/api-reference@";
    let directive = |name: &str| {
        csp.split(';')
            .map(str::trim)
            .find(|d| d.starts_with(name))
            .unwrap_or_default()
            .to_owned()
    };
    let script_src = directive("script-src");
    assert!(
        script_src.starts_with(&format!("script-src {script}")),
        "{csp}"
    );
    assert!(script_src.ends_with("/dist/browser/standalone.js"), "{csp}");
    assert_eq!(directive("img-src"), "img-src data:", "{csp}");
    assert!(
        !csp.contains("https: ") && !csp.ends_with("https:"),
        "no scheme-wide sources: {csp}"
    );
    let html = docs.text().await.expect("html");
    assert!(html.contains("/openapi.json"));
    let tag = html
        .lines()
        .find(|line| line.contains(script))
        .expect("the viewer script")
        .to_owned();
    let version = tag
        .split(script)
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("a version");
    assert!(
        version.split('.').count() == 3 && version.split('.').all(|p| p.parse::<u32>().is_ok()),
        "an exact version, not a range: {tag}"
    );
    assert!(
        script_src.contains(version),
        "the CSP names the same file: {csp}"
    );
    let integrity = tag
        .split("integrity=\"sha384-")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("an SRI hash");
    assert_eq!(integrity.len(), 64, "a base64 SHA-384: {tag}");
    assert!(tag.contains("crossorigin=\"anonymous\""), "{tag}");
}

/// A valid value for a documented query parameter.
fn sample(name: &str, schema: &Value) -> String {
    fn first_enum(schema: &Value) -> Option<String> {
        match schema {
            Value::Object(map) => map
                .get("enum")
                .and_then(|values| values.as_array()?.iter().find_map(Value::as_str))
                .map(str::to_owned)
                .or_else(|| map.values().find_map(first_enum)),
            Value::Array(items) => items.iter().find_map(first_enum),
            _ => None,
        }
    }
    let text = schema.to_string();
    if let Some(value) = first_enum(schema) {
        value
    } else if text.contains("integer") {
        "1".to_owned()
    } else if text.contains("\"uuid\"") {
        uuid::Uuid::now_v7().to_string()
    } else if matches!(name, "since" | "until") {
        "2020-01-01T00:00:00Z".to_owned()
    } else {
        "x".to_owned()
    }
}

/// The document and the server agree on the query parameters: every documented one, with a
/// valid value, is accepted (the server rejects unknown parameters with 422, so a parameter
/// documented but not read, or renamed on one side only, fails here).
#[tokio::test]
async fn every_documented_query_parameter_is_accepted() {
    let server = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let owner = &server.world.a.principal;
    let doc = server
        .call(None, Method::GET, "/openapi.json", None)
        .await
        .body;
    let server = &server;
    let created = move |path: &'static str, body: Value| async move {
        let reply = server
            .call(Some(owner), Method::POST, path, Some(body))
            .await;
        reply.body["id"].as_str().expect("id").to_owned()
    };
    let project = created("/v1/projects", serde_json::json!({"name": "P"})).await;
    let team = created("/v1/teams", serde_json::json!({"name": "T"})).await;

    let mut checked = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let Some(parameters) = item["get"]["parameters"].as_array() else {
            continue;
        };
        let query: Vec<String> = parameters
            .iter()
            .filter(|p| p["in"] == "query" && p["name"] != "cursor")
            .map(|p| {
                let name = p["name"].as_str().expect("name");
                format!("{name}={}", sample(name, &p["schema"]))
            })
            .collect();
        // The WebSocket handshake reads its `ticket` only on an upgrade request (realtime's
        // own tests cover it).
        if query.is_empty() || path == "/v1/realtime" {
            continue;
        }
        let concrete = path
            .replace("/v1/projects/{id}", &format!("/v1/projects/{project}"))
            .replace("/v1/teams/{id}", &format!("/v1/teams/{team}"));
        assert!(!concrete.contains('{'), "no record for {path}");
        let url = format!("{concrete}?{}", query.join("&"));
        let reply = server.call(Some(owner), Method::GET, &url, None).await;
        assert_eq!(reply.status, StatusCode::OK, "GET {url}: {}", reply.body);
        checked.push(path.clone());
    }
    assert_eq!(checked.len(), 8, "{checked:?}");
}

/// A route and its document entry are one declaration (utoipa-axum), so the router serves
/// exactly the document's operations: every documented method of every documented path is
/// routed (never the "no such route" fallback, never 405), every other method of those paths
/// answers 405, and only the document and its viewer are served outside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_serves_exactly_the_documented_operations() {
    let server = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let doc = server
        .call(None, Method::GET, "/openapi.json", None)
        .await
        .body;
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];
    let mut routed = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let concrete: String = path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    uuid::Uuid::now_v7().to_string()
                } else {
                    segment.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in &methods {
            let documented = item.get(method.as_str().to_lowercase()).is_some();
            // A session of its own for each call: the calls include logout-all and member
            // removal, which end sessions (at once: the revocation bus evicts the check).
            let owner = server.with_live_session(&server.world.a.principal).await;
            let reply = server
                .call(
                    Some(&owner),
                    method.clone(),
                    &concrete,
                    Some(serde_json::json!({})),
                )
                .await;
            if documented {
                routed += 1;
                assert_ne!(
                    reply.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path}"
                );
                assert!(
                    !(reply.status == StatusCode::NOT_FOUND
                        && reply.body["detail"] == "No such route."),
                    "{method} {path} is documented but not routed"
                );
            } else {
                assert_eq!(
                    reply.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is routed but not documented"
                );
            }
        }
    }
    assert_eq!(routed, OPERATIONS.len(), "every operation was probed");
    for (method, path) in tenantkit_server::UNDOCUMENTED_ROUTES {
        assert!(
            doc["paths"].get(*path).is_none(),
            "{path} is not in the document"
        );
        let reply = server
            .anonymous(method.to_uppercase().parse().expect("method"), path)
            .send()
            .await
            .expect("send");
        assert_eq!(reply.status(), StatusCode::OK, "{method} {path}");
    }
}
