//! Bad input of every kind answers 4xx `application/problem+json` with a stable code; never a
//! 500, never a stack trace, never SQL.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tenantkit_core::Role;
use tenantkit_e2e::{TestServer, problem};

async fn assert_problem(
    response: reqwest::Response,
    status: StatusCode,
    code: &str,
) -> serde_json::Value {
    assert_eq!(response.status(), status);
    let body = problem(response).await;
    assert_eq!(body["code"], code, "{body}");
    let text = body.to_string().to_lowercase();
    for leak in [
        "select ",
        "insert ",
        "sqlx",
        "panicked",
        "stack backtrace",
        "src/",
    ] {
        assert!(
            !text.contains(leak),
            "problem leaks internals ({leak}): {body}"
        );
    }
    body
}

fn fields(body: &serde_json::Value) -> Vec<String> {
    body["errors"].as_array().map_or_else(Vec::new, |errors| {
        errors
            .iter()
            .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
            .collect()
    })
}

async fn malformed_ids_answer_like_missing_ones(server: TestServer) {
    let owner = &server.world.a.principal;
    let random = server
        .request(owner, Method::GET, &format!("/v1/projects/{}", uuid_v7()))
        .send()
        .await
        .expect("send");
    let random = assert_problem(random, StatusCode::NOT_FOUND, "not_found").await;
    for bad in [
        "not-a-uuid",
        "42",
        "%27%20OR%201=1--",
        "00000000000000000000000000000000",
        &"a".repeat(5000),
    ] {
        for path in [
            format!("/v1/projects/{bad}"),
            format!("/v1/tasks/{bad}"),
            format!("/v1/projects/{bad}/tasks"),
        ] {
            let response = server
                .request(owner, Method::GET, &path)
                .send()
                .await
                .expect("send");
            let body = assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
            assert_eq!(
                body, random,
                "a malformed id is indistinguishable from a missing one"
            );
        }
        let patch = server
            .request(owner, Method::PATCH, &format!("/v1/projects/{bad}"))
            .json(&json!({"name": "x"}))
            .send()
            .await
            .expect("send");
        assert_problem(patch, StatusCode::NOT_FOUND, "not_found").await;
    }
}

async fn malformed_cursors_and_limits_are_validation_errors(server: TestServer) {
    let owner = &server.world.a.principal;
    let cases: &[(&str, &[&str])] = &[
        ("cursor=garbage", &["cursor"]),
        ("cursor=AAAAAAAAAAAAAAAAAAAAAAA", &["cursor"]),
        ("limit=0", &["limit"]),
        ("limit=101", &["limit"]),
        ("limit=-1", &["limit"]),
        ("limit=ten", &["limit"]),
        ("limit=99999999999999999999", &["limit"]),
        ("limit=1000&cursor=%%%", &["limit", "cursor"]),
        ("limit=5&limit=6", &["limit"]),
        ("sort=name", &["sort"]),
    ];
    for (query, expected) in cases {
        let response = server
            .request(owner, Method::GET, &format!("/v1/projects?{query}"))
            .send()
            .await
            .expect("send");
        let body = assert_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(fields(&body), *expected, "{query}: {body}");
    }
    let ok = server
        .request(owner, Method::GET, "/v1/projects?limit=100")
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), StatusCode::OK);

    let project = create_project(&server).await;
    let tasks = format!("/v1/projects/{project}/tasks");
    for (query, field) in [
        ("status=doing", "status"),
        ("assignee_id=bob", "assignee_id"),
        ("limit=0", "limit"),
    ] {
        let response = server
            .request(owner, Method::GET, &format!("{tasks}?{query}"))
            .send()
            .await
            .expect("send");
        let body = assert_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(fields(&body), [field], "{query}");
    }
}

async fn malformed_bodies_are_rejected_with_the_right_code(server: TestServer) {
    let owner = &server.world.a.principal;
    let post = || server.request(owner, Method::POST, "/v1/projects");
    let send_raw = |body: &'static str| {
        post()
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    assert_problem(
        send_raw("{\"name\": ").await.expect("send"),
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    assert_problem(
        send_raw("not json").await.expect("send"),
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    assert_problem(
        send_raw("").await.expect("send"),
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    for shape in [
        "{\"name\": 5}",
        "[1, 2]",
        // A struct's fields by position: serde would read it; the API does not.
        "[\"Positional\", null]",
        " [\"Positional\"]",
        "\"Positional\"",
        "{}",
        "{\"name\": \"ok\", \"tenant_id\": \"x\"}",
        "null",
        "42",
        "true",
    ] {
        let response = send_raw(shape).await.expect("send");
        assert_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
    let missing_type = post().body("{\"name\": \"x\"}").send().await.expect("send");
    assert_problem(
        missing_type,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let wrong_type = post()
        .header("content-type", "text/plain")
        .body("{\"name\": \"x\"}")
        .send()
        .await
        .expect("send");
    assert_problem(
        wrong_type,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    // Over the limit: refused from Content-Length, before the body is read. (With a small
    // limit and a body that fits in socket buffers, so the client always reads the answer.)
    let config = tenantkit_server::Config {
        body_limit: 8 * 1024,
        ..tenantkit_server::Config::default()
    };
    let backend = server.test_db.db.backend();
    let small = TestServer::start_with(backend, config)
        .await
        .expect("second server");
    let huge = json!({ "name": "big", "description": "x".repeat(64 * 1024) });
    let response = small
        .request(&small.world.a.principal, Method::POST, "/v1/projects")
        .json(&huge)
        .send()
        .await
        .expect("send");
    assert_eq!(response.headers()["connection"], "close");
    assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    // Streamed without Content-Length: stopped once the limit is read. The server may close
    // the connection while the client is still writing; then the client sees a broken pipe
    // instead of the 413. Either way nothing is stored and the server keeps serving.
    // On a connection of its own: the server stops reading and closes it.
    let streamed = small
        .request_alone(&small.world.a.principal, Method::POST, "/v1/projects")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_stream(64)))
        .send()
        .await;
    match streamed {
        Ok(response) => {
            assert_eq!(
                response.headers().get("connection").map(|v| v.as_bytes()),
                Some(&b"close"[..]),
                "a refused body closes its connection, so no client reuses it"
            );
            assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
        }
        Err(err) => assert!(err.is_request(), "only the upload may fail: {err}"),
    }
    let listed: serde_json::Value = small
        .request(&small.world.a.principal, Method::GET, "/v1/projects")
        .send()
        .await
        .expect("the server still serves")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["items"], json!([]), "nothing stored");

    let invalid = post()
        .json(&json!({ "name": "  ", "description": "y".repeat(10_001) }))
        .send()
        .await
        .expect("send");
    let body = assert_problem(
        invalid,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(fields(&body), ["name", "description"]);

    // Nothing was stored by any of the rejected requests.
    let list: serde_json::Value = server
        .request(owner, Method::GET, "/v1/projects")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(list["items"], json!([]));
}

async fn unauthenticated_forbidden_and_unknown_routes_are_problems(server: TestServer) {
    let response = server
        .anonymous(Method::GET, "/v1/projects")
        .send()
        .await
        .expect("send");
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="tenantkit""#
    );
    assert_problem(response, StatusCode::UNAUTHORIZED, "unauthenticated").await;

    let (_, viewer) = server.add_user(&server.world.a, Role::Viewer).await;
    let response = server
        .request(&viewer, Method::POST, "/v1/projects")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .expect("send");
    assert_problem(response, StatusCode::FORBIDDEN, "forbidden").await;
    let response = server
        .request(&viewer, Method::GET, "/v1/projects")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK, "viewers read");

    let response = server
        .anonymous(Method::GET, "/v1/no-such-route")
        .send()
        .await
        .expect("send");
    assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
    // Anonymous callers learn nothing about a protected route's methods: 401 first.
    let response = server
        .anonymous(Method::PUT, "/v1/projects")
        .send()
        .await
        .expect("send");
    assert_problem(response, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let response = server
        .request(&server.world.a.principal, Method::PUT, "/v1/projects")
        .send()
        .await
        .expect("send");
    assert!(
        response.headers()["allow"]
            .to_str()
            .expect("allow")
            .contains("GET")
    );
    assert_problem(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
}

async fn if_match_must_be_an_etag_we_issued(server: TestServer) {
    let owner = &server.world.a.principal;
    let project = create_project(&server).await;
    for bad in ["garbage", "W/\"1\"", "\"one\"", "1"] {
        let response = server
            .request(owner, Method::PATCH, &format!("/v1/projects/{project}"))
            .header("if-match", bad)
            .json(&json!({"name": "renamed"}))
            .send()
            .await
            .expect("send");
        assert_problem(
            response,
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
        )
        .await;
    }
}

async fn request_ids_are_echoed_only_when_harmless(server: TestServer) {
    let sane = server
        .anonymous(Method::GET, "/healthz")
        .header("x-request-id", "abc-123")
        .send()
        .await
        .expect("send");
    assert_eq!(sane.headers()["x-request-id"], "abc-123");
    let hostile = server
        .anonymous(Method::GET, "/healthz")
        .header("x-request-id", "a\tb; DROP")
        .send()
        .await
        .expect("send");
    let replaced = hostile.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_owned();
    assert_eq!(replaced.len(), 36, "replaced by a fresh UUID: {replaced}");
    let fresh = server
        .anonymous(Method::GET, "/readyz")
        .send()
        .await
        .expect("send");
    assert_eq!(fresh.status(), StatusCode::OK);
    assert!(fresh.headers().contains_key("x-request-id"));
}

async fn create_project(server: &TestServer) -> String {
    let response = server
        .request(&server.world.a.principal, Method::POST, "/v1/projects")
        .json(&json!({"name": "Fixture"}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: serde_json::Value = response.json().await.expect("json");
    body["id"].as_str().expect("id").to_owned()
}

/// A JSON body sent in `n` 1 KiB chunks with no Content-Length.
fn futures_stream(
    n: usize,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    let mut parts: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(b"{\"name\": \"".to_vec())];
    parts.extend((0..n).map(|_| Ok(vec![b'x'; 1024])));
    parts.push(Ok(b"\"}".to_vec()));
    tokio_stream_iter(parts)
}

fn tokio_stream_iter<T: Send + 'static>(
    items: Vec<T>,
) -> impl futures_core::Stream<Item = T> + Send + 'static {
    struct Iter<T>(std::vec::IntoIter<T>);
    impl<T> futures_core::Stream for Iter<T> {
        type Item = T;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<T>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    impl<T> Unpin for Iter<T> {}
    Iter(items.into_iter())
}

/// Query validation is bounded: past the cap a query string is refused (400) before any of
/// it is looked at, and below it every unknown or repeated name is reported once.
async fn query_strings_are_bounded(server: TestServer) {
    let owner = &server.world.a.principal;
    let cap = tenantkit_server::extract::MAX_QUERY_PARAMETERS;
    let over: Vec<String> = (0..5000).map(|n| format!("p{n}=x")).collect();
    let response = server
        .request(
            owner,
            Method::GET,
            &format!("/v1/projects?{}", over.join("&")),
        )
        .send()
        .await
        .expect("send");
    let body = assert_problem(response, StatusCode::BAD_REQUEST, "bad_request").await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("parameters")),
        "{body}"
    );
    // One past the cap is already too many; the cap itself is served.
    let just_over: Vec<String> = (0..=cap).map(|n| format!("p{n}=x")).collect();
    let response = server
        .request(
            owner,
            Method::GET,
            &format!("/v1/projects?{}", just_over.join("&")),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let at_cap: Vec<String> = (0..cap).map(|n| format!("p{n}=x")).collect();
    let response = server
        .request(
            owner,
            Method::GET,
            &format!("/v1/projects?{}", at_cap.join("&")),
        )
        .send()
        .await
        .expect("send");
    let body = assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let named = fields(&body);
    assert_eq!(named.len(), cap, "every unknown name, once");
    let unique: std::collections::HashSet<&String> = named.iter().collect();
    assert_eq!(unique.len(), cap);
    // The same unknown name many times is one error; a repeated known one is one too.
    let repeated = format!("{}&limit=1&limit=2", vec!["junk=1"; cap - 2].join("&"));
    let response = server
        .request(owner, Method::GET, &format!("/v1/projects?{repeated}"))
        .send()
        .await
        .expect("send");
    let body = assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(fields(&body), ["junk", "limit"], "{body}");
}

fn uuid_v7() -> tenantkit_server::domain::ProjectId {
    tenantkit_server::domain::ProjectId::new()
}

/// A value the body's types cannot hold (a negative or too large number, a fraction for a
/// whole number, a string for a number, a number for a string, enum or time) names its field,
/// as every other validation error does; so do a missing and an unknown field. Only a body
/// that is no JSON object at all is named `body`.
async fn bad_values_name_their_field(server: TestServer) {
    let owner = &server.world.a.principal;
    let project = server
        .call(
            Some(owner),
            Method::POST,
            "/v1/projects",
            Some(json!({"name": "Fields"})),
        )
        .await;
    assert_eq!(project.status, StatusCode::CREATED, "{}", project.body);
    let tasks = format!(
        "/v1/projects/{}/tasks",
        project.body["id"].as_str().expect("id")
    );
    let member = format!("/v1/members/{}", server.world.a.owner.id);
    let upload = |size: serde_json::Value| json!({"filename": "a.txt", "content_type": "text/plain", "size": size});
    let cases: Vec<(Method, &str, serde_json::Value, &str)> = vec![
        (Method::POST, "/v1/uploads", upload(json!(-1)), "size"),
        (
            Method::POST,
            "/v1/uploads",
            upload(json!(-9_223_372_036_854_775_808_i64)),
            "size",
        ),
        (Method::POST, "/v1/uploads", upload(json!(1.5)), "size"),
        (Method::POST, "/v1/uploads", upload(json!(1e30)), "size"),
        (Method::POST, "/v1/uploads", upload(json!("12")), "size"),
        (Method::POST, "/v1/uploads", upload(json!(null)), "size"),
        (
            Method::POST,
            "/v1/uploads",
            json!({"filename": "a.txt", "content_type": "text/plain"}),
            "size",
        ),
        (
            Method::POST,
            "/v1/uploads",
            json!({"filename": 7, "content_type": "text/plain", "size": 1}),
            "filename",
        ),
        (Method::POST, "/v1/projects", json!({"name": 5}), "name"),
        (Method::POST, "/v1/projects", json!({}), "name"),
        (
            Method::POST,
            "/v1/projects",
            json!({"name": "x", "colour": 3}),
            "colour",
        ),
        (
            Method::POST,
            &tasks,
            json!({"title": "x", "status": 3}),
            "status",
        ),
        (
            Method::POST,
            &tasks,
            json!({"title": "x", "status": "someday"}),
            "status",
        ),
        (
            Method::POST,
            &tasks,
            json!({"title": "x", "due_at": 1_700_000_000}),
            "due_at",
        ),
        (
            Method::POST,
            &tasks,
            json!({"title": "x", "assignee_id": 42}),
            "assignee_id",
        ),
        (
            Method::POST,
            "/v1/invitations",
            json!({"email": "n@example.com", "role": 1}),
            "role",
        ),
        (Method::PATCH, &member, json!({"role": -1}), "role"),
        (Method::PATCH, "/v1/tenant", json!({"name": 12}), "name"),
    ];
    for (method, path, body, field) in cases {
        let response = server
            .request(owner, method.clone(), path)
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{method} {path} {body}"
        );
        let problem = assert_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(
            fields(&problem),
            vec![field],
            "{method} {path} {body}: {problem}"
        );
        let message = problem["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(
            !message.contains(" at line "),
            "no parser positions: {message}"
        );
    }
    // A number too large for any integer type, sent as text.
    let response = server
        .request(owner, Method::POST, "/v1/uploads")
        .header("content-type", "application/json")
        .body(
            r#"{"filename": "a.txt", "content_type": "text/plain", "size": 18446744073709551616}"#,
        )
        .send()
        .await
        .expect("send");
    let problem = assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(fields(&problem), vec!["size"], "{problem}");
    // Query parameters name theirs too.
    for query in [
        "limit=-1",
        "limit=1e9",
        "limit=x",
        "limit=18446744073709551616",
    ] {
        let response = server
            .request(owner, Method::GET, &format!("/v1/projects?{query}"))
            .send()
            .await
            .expect("send");
        let problem = assert_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(fields(&problem), vec!["limit"], "{query}: {problem}");
    }
}

/// What a rejection names is bounded, and text that is not valid JSON text stays a syntax
/// error (400), never a "wrong type" (422).
async fn rejections_are_bounded_and_bad_text_is_a_syntax_error(server: TestServer) {
    let owner = server.world.a.principal.clone();
    let send = |body: Vec<u8>| {
        server
            .request_alone(&owner, Method::POST, "/v1/projects")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // An unknown key of 10,000 characters: the field named is cut to 300.
    let long_key = "k".repeat(10_000);
    let body = format!(r#"{{"name":"x","{long_key}":1}}"#).into_bytes();
    let reply = send(body).await.expect("send");
    assert_eq!(reply.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = problem(reply).await;
    let field = body["errors"][0]["field"].as_str().expect("field");
    assert!(
        field.chars().count() <= 300,
        "an unbounded field: {} chars",
        field.len()
    );
    // A lone surrogate and invalid UTF-8 inside a string are not JSON text.
    for raw in [
        br#"{"name":"\ud800"}"#.to_vec(),
        [br#"{"name":""#.as_slice(), &[0xff, 0xfe], br#""}"#].concat(),
    ] {
        let reply = send(raw).await.expect("send");
        assert_eq!(reply.status(), StatusCode::BAD_REQUEST);
        assert_eq!(problem(reply).await["code"], "bad_request");
    }
}

tenantkit_core::backend_tests!(fixture = tenantkit_e2e::server;
    rejections_are_bounded_and_bad_text_is_a_syntax_error,
    malformed_ids_answer_like_missing_ones,
    malformed_cursors_and_limits_are_validation_errors,
    malformed_bodies_are_rejected_with_the_right_code,
    unauthenticated_forbidden_and_unknown_routes_are_problems,
    if_match_must_be_an_etag_we_issued,
    request_ids_are_echoed_only_when_harmless,
    query_strings_are_bounded,
    bad_values_name_their_field,
);
