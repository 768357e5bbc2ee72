//! Fuzzing the running server through every operation of its OpenAPI document: hostile JSON
//! bodies (any value, and valid bodies with a field dropped, replaced or added), raw bytes,
//! query strings, path segments, bearer headers and mailed tokens. Every answer must be a
//! documented kind of failure or a success: never a 5xx, and every error a problem+json with
//! a stable code. Inputs are reproducible (see `tenantkit_core::testing::fuzz`).

use std::num::NonZeroU32;

use proptest::prelude::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantkit_core::Backend;
use tenantkit_core::testing::fuzz::{
    hostile_bytes, hostile_string, json_value, mutated_object, samples,
};
use tenantkit_e2e::TestServer;

/// Operations left out: they end the session the run uses (so later cases would only test the
/// 401), or remove the fixtures it needs. Their inputs are fuzzed elsewhere (logout's refresh
/// token in tenantkit-auth's fuzz suite; DELETEs below with random ids).
const SKIPPED: &[(&str, &str)] = &[("post", "/v1/auth/logout-all"), ("post", "/v1/auth/logout")];

/// A server whose rate limits never get in the way of the run.
async fn fuzz_server(backend: Backend) -> Option<TestServer> {
    let config = tenantkit_server::Config {
        rate_per_ip: NonZeroU32::MAX,
        rate_refresh_per_ip: NonZeroU32::MAX,
        rate_per_account: NonZeroU32::MAX,
        rate_per_account_total: NonZeroU32::MAX,
        ..tenantkit_server::Config::default()
    };
    TestServer::start_with(backend, config).await
}

/// The answer is a success or a well-formed failure: never a 5xx, and a problem with a code.
async fn assert_answer(response: reqwest::Response, what: &str) -> StatusCode {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.bytes().await.unwrap_or_default();
    assert!(
        !status.is_server_error(),
        "{what}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    if status.is_client_error() {
        assert!(
            content_type.starts_with("application/problem+json"),
            "{what}: {status} {content_type}"
        );
        let problem: Value = serde_json::from_slice(&body).expect("problem json");
        assert!(
            problem["code"].as_str().is_some_and(|c| !c.is_empty()),
            "{what}: {problem}"
        );
        assert_eq!(problem["status"], status.as_u16(), "{what}");
    }
    status
}

/// Resolves a `$ref` in the document.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let path = reference.trim_start_matches("#/");
            path.split('/').fold(doc, |node, part| &node[part])
        }
        None => schema,
    }
}

/// A value that satisfies `schema` as far as types, enums and required fields go: the base
/// that mutations start from, so they reach the checks behind the first one.
fn sample(doc: &Value, schema: &Value, depth: usize) -> Value {
    let schema = resolve(doc, schema);
    if depth > 6 {
        return Value::Null;
    }
    if let Some(first) = schema["enum"].as_array().and_then(|v| v.first()) {
        return first.clone();
    }
    for combinator in ["oneOf", "anyOf", "allOf"] {
        if let Some(first) = schema[combinator]
            .as_array()
            .and_then(|v| v.iter().find(|s| resolve(doc, s)["type"] != "null"))
        {
            return sample(doc, first, depth + 1);
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if types.contains(&"null") {
        // Optional: leave it out of the way.
        return Value::Null;
    }
    let kind = types.first().copied().unwrap_or("object");
    match kind {
        "string" => match schema["format"].as_str() {
            Some("uuid") => json!(uuid::Uuid::now_v7()),
            Some("date-time") => json!("2030-01-01T00:00:00Z"),
            Some("email") => json!("fuzz@example.com"),
            Some("password") => json!("a long enough passphrase"),
            _ => json!("fuzz"),
        },
        "integer" | "number" => json!(1),
        "boolean" => json!(false),
        "array" => json!([sample(doc, &schema["items"], depth + 1)]),
        _ => {
            let mut object = serde_json::Map::new();
            if let Some(properties) = schema["properties"].as_object() {
                for (name, property) in properties {
                    object.insert(name.clone(), sample(doc, property, depth + 1));
                }
            }
            Value::Object(object)
        }
    }
}

/// The document's operations: (method, path template, request-body schema, query names).
fn operations(doc: &Value) -> Vec<(String, String, Option<Value>, Vec<String>)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("item") {
            if SKIPPED.contains(&(method.as_str(), path.as_str())) {
                continue;
            }
            let body = operation["requestBody"]["content"]["application/json"]["schema"]
                .as_object()
                .map(|s| Value::Object(s.clone()));
            let query = operation["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "query")
                        .filter_map(|p| p["name"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            found.push((method.clone(), path.clone(), body, query));
        }
    }
    found
}

fn method(name: &str) -> Method {
    Method::from_bytes(name.to_ascii_uppercase().as_bytes()).expect("method")
}

/// Percent-encodes every byte but ASCII letters and digits, of the first 512 characters (a
/// URL has to stay under the client's own limit; the server's caps are tested in bad_input).
fn encode(text: &str) -> String {
    let text: String = text.chars().take(512).collect();
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn every_operation_survives_hostile_input(server: TestServer) {
    let owner = server.world.a.principal.clone();
    let call = |m: Method, path: &str| server.request(&owner, m, path);
    // Real records for the path parameters, so inputs reach the handlers' own checks.
    let project: Value = call(Method::POST, "/v1/projects")
        .json(&json!({"name": "Fuzzed"}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let project_id = project["id"].as_str().expect("id").to_owned();
    let task: Value = call(Method::POST, &format!("/v1/projects/{project_id}/tasks"))
        .json(&json!({"title": "Fuzzed"}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let team: Value = call(Method::POST, "/v1/teams")
        .json(&json!({"name": "Fuzzers"}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let (member, _) = server
        .add_user(&server.world.a, tenantkit_core::Role::Member)
        .await;
    // A path parameter takes the real record of the collection before it.
    let fill = |template: &str| {
        let mut path = Vec::new();
        let mut collection = "";
        for part in template.split('/') {
            let value = if part.starts_with('{') {
                match collection {
                    "projects" => project_id.clone(),
                    "tasks" => task["id"].as_str().expect("id").to_owned(),
                    "teams" => team["id"].as_str().expect("id").to_owned(),
                    "members" => member.id.to_string(),
                    _ => uuid::Uuid::now_v7().to_string(),
                }
            } else {
                collection = part;
                part.to_owned()
            };
            path.push(value);
        }
        path.join("/")
    };
    let doc: Value = server
        .anonymous(Method::GET, "/openapi.json")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let mut requests = 0usize;
    let mut seen = std::collections::BTreeMap::<u16, usize>::new();
    for (method_name, template, body, query) in operations(&doc) {
        if method_name == "delete" {
            // Random ids only: the fixtures stay.
            let path = template
                .split('/')
                .map(|part| {
                    if part.starts_with('{') {
                        uuid::Uuid::now_v7().to_string()
                    } else {
                        part.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let response = call(Method::DELETE, &path).send().await.expect("send");
            assert_answer(response, &format!("DELETE {path}")).await;
            continue;
        }
        let path = fill(&template);
        let what = format!("{} {template}", method_name.to_ascii_uppercase());
        if let Some(schema) = &body {
            let valid = sample(&doc, schema, 0);
            let bodies = samples(
                &what,
                24,
                prop_oneof![
                    1 => Just(valid.clone()),
                    4 => mutated_object(valid.clone()),
                    2 => json_value(),
                ],
            );
            for input in bodies {
                let response = call(method(&method_name), &path)
                    .json(&input)
                    .send()
                    .await
                    .expect("send");
                let status = assert_answer(response, &format!("{what} {input}")).await;
                assert!(
                    !status.is_success() || input.is_object(),
                    "{what} accepted a body that is not an object: {input}"
                );
                *seen.entry(status.as_u16()).or_default() += 1;
                if std::env::var_os("TENANTKIT_FUZZ_VERBOSE").is_some() {
                    eprintln!("{status} {what} {input}");
                }
                requests += 1;
            }
            for raw in samples(&format!("{what} raw"), 8, hostile_bytes()) {
                let response = call(method(&method_name), &path)
                    .header("content-type", "application/json")
                    .body(raw.clone())
                    .send()
                    .await
                    .expect("send");
                let status = assert_answer(
                    response,
                    &format!("{what} raw {:?}", String::from_utf8_lossy(&raw)),
                )
                .await;
                *seen.entry(status.as_u16()).or_default() += 1;
                requests += 1;
            }
        }
        if method_name == "get" {
            let names: Vec<String> = query.clone();
            let name = if names.is_empty() {
                hostile_string().boxed()
            } else {
                prop_oneof![2 => proptest::sample::select(names), 1 => hostile_string()].boxed()
            };
            let pairs = proptest::collection::vec((name, hostile_string()), 0..8);
            for pairs in samples(&format!("{what} query"), 16, pairs) {
                let query: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                    .collect();
                let url = format!("{path}?{}", query.join("&"));
                let response = call(Method::GET, &url).send().await.expect("send");
                let status = assert_answer(response, &format!("{what} ?{}", query.join("&"))).await;
                *seen.entry(status.as_u16()).or_default() += 1;
                requests += 1;
            }
        }
    }
    // Path segments of any shape where an id belongs.
    for segment in samples("path segments", 64, hostile_string()) {
        for base in ["/v1/projects", "/v1/tasks", "/v1/teams", "/v1/members"] {
            let url = format!("{base}/{}", encode(&segment));
            let response = call(Method::GET, &url).send().await.expect("send");
            let status = assert_answer(response, &format!("GET {url}")).await;
            assert!(
                status.is_client_error() || status.is_success(),
                "{url}: {status}"
            );
            requests += 1;
        }
    }
    assert!(requests > 500, "the run reached {requests} requests");
    // The inputs reached the handlers: some were accepted, most refused by their checks (and
    // the caller's token stayed good throughout).
    for status in [200, 201, 400, 422] {
        assert!(seen.contains_key(&status), "no {status} in {seen:?}");
    }
    assert!(
        seen.get(&401).copied().unwrap_or(0) * 10 < requests,
        "mostly unauthenticated: {seen:?}"
    );
    eprintln!("fuzz: {requests} requests, statuses {seen:?}");
}

async fn bearer_headers_and_mailed_tokens_of_any_shape_are_refused(server: TestServer) {
    for raw in samples("bearer", 256, hostile_bytes()) {
        let Ok(value) = reqwest::header::HeaderValue::from_bytes(&raw) else {
            continue;
        };
        for prefix in ["", "Bearer "] {
            let mut header = prefix.as_bytes().to_vec();
            header.extend_from_slice(value.as_bytes());
            let Ok(header) = reqwest::header::HeaderValue::from_bytes(&header) else {
                continue;
            };
            let response = server
                .anonymous(Method::GET, "/v1/me")
                .header("authorization", header)
                .send()
                .await
                .expect("send");
            let status = assert_answer(response, &format!("bearer {raw:?}")).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{raw:?}");
        }
    }
    for token in samples("mailed tokens", 96, hostile_string()) {
        for (path, body) in [
            (
                "/v1/invitations/accept",
                json!({"token": token, "password": "a long enough passphrase"}),
            ),
            (
                "/v1/auth/password-reset/confirm",
                json!({"token": token, "new_password": "a long enough passphrase"}),
            ),
            ("/v1/auth/verify-email/confirm", json!({"token": token})),
            ("/v1/auth/refresh", json!({"refresh_token": token})),
        ] {
            let response = server
                .anonymous(Method::POST, path)
                .json(&body)
                .send()
                .await
                .expect("send");
            let status = assert_answer(response, &format!("{path} {token:?}")).await;
            assert!(
                matches!(
                    status,
                    StatusCode::UNPROCESSABLE_ENTITY | StatusCode::UNAUTHORIZED
                ),
                "{path}: {status} for {token:?}"
            );
        }
    }
}

tenantkit_core::backend_tests!(
    fixture = fuzz_server;
    every_operation_survives_hostile_input,
    bearer_headers_and_mailed_tokens_of_any_shape_are_refused
);
