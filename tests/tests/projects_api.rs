//! The project and task API over real HTTP: CRUD, ETag/If-Match, pagination, and tenant
//! isolation (another tenant's resource answers exactly like a missing one).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantkit_core::{Principal, Role};
use tenantkit_e2e::{TestServer, problem};

async fn send(
    server: &TestServer,
    who: &Principal,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let reply = server.call(Some(who), method, path, body).await;
    (reply.status, reply.headers, reply.body)
}

async fn project_lifecycle_with_etags(server: TestServer) {
    let owner = &server.world.a.principal;
    let (status, headers, created) = send(
        &server,
        owner,
        Method::POST,
        "/v1/projects",
        Some(json!({"name": "Apollo", "description": "moon"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(headers["etag"], "\"1\"");
    assert_eq!(headers["location"], format!("/v1/projects/{id}").as_str());
    assert_eq!(created["version"], 1);
    assert!(
        created.get("tenant_id").is_none(),
        "tenant ids are not echoed"
    );

    let path = format!("/v1/projects/{id}");
    let (status, headers, read) = send(&server, owner, Method::GET, &path, None).await;
    assert_eq!((status, read.clone()), (StatusCode::OK, created.clone()));
    assert_eq!(headers["etag"], "\"1\"");

    let patch = server
        .request(owner, Method::PATCH, &path)
        .header("if-match", "\"1\"")
        .json(&json!({"name": "Artemis", "description": null}));
    let response = patch.send().await.expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["etag"], "\"2\"");
    let updated: Value = response.json().await.expect("json");
    assert_eq!(
        (
            updated["name"].clone(),
            updated["description"].clone(),
            updated["version"].clone()
        ),
        (json!("Artemis"), Value::Null, json!(2))
    );

    // A stale If-Match loses: 412, nothing changes.
    let stale = server
        .request(owner, Method::PATCH, &path)
        .header("if-match", "\"1\"")
        .json(&json!({"name": "Gemini"}))
        .send()
        .await
        .expect("send");
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(problem(stale).await["code"], "precondition_failed");
    let stale_delete = server
        .request(owner, Method::DELETE, &path)
        .header("if-match", "\"1\"")
        .send()
        .await
        .expect("send");
    assert_eq!(stale_delete.status(), StatusCode::PRECONDITION_FAILED);
    let (_, _, now) = send(&server, owner, Method::GET, &path, None).await;
    assert_eq!(now["name"], "Artemis");

    let delete = server
        .request(owner, Method::DELETE, &path)
        .header("if-match", "\"2\"")
        .send()
        .await
        .expect("send");
    assert_eq!(delete.status(), StatusCode::NO_CONTENT);
    let (status, _, _) = send(&server, owner, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn concurrent_patches_with_one_etag_let_exactly_one_win(server: TestServer) {
    let owner = server.world.a.principal.clone();
    let (_, _, created) = send(
        &server,
        &owner,
        Method::POST,
        "/v1/projects",
        Some(json!({"name": "Race"})),
    )
    .await;
    let path = format!("/v1/projects/{}", created["id"].as_str().expect("id"));
    let attempts = (0..6).map(|i| {
        server
            .request(&owner, Method::PATCH, &path)
            .header("if-match", "\"1\"")
            .json(&json!({"name": format!("w{i}")}))
            .send()
    });
    let mut statuses = Vec::new();
    for response in futures_join(attempts).await {
        statuses.push(response.expect("send").status());
    }
    let wins = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let losses = statuses
        .iter()
        .filter(|s| **s == StatusCode::PRECONDITION_FAILED)
        .count();
    assert_eq!((wins, losses), (1, 5), "{statuses:?}");
    let (_, _, stored) = send(&server, &owner, Method::GET, &path, None).await;
    assert_eq!(stored["version"], 2, "no lost update");
}

async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.expect("join"));
    }
    outputs
}

async fn lists_paginate_with_cursors(server: TestServer) {
    let owner = &server.world.a.principal;
    let mut created = Vec::new();
    for i in 0..5 {
        let (_, _, p) = send(
            &server,
            owner,
            Method::POST,
            "/v1/projects",
            Some(json!({"name": format!("p{i}")})),
        )
        .await;
        created.push(p["id"].clone());
    }
    let mut seen = Vec::new();
    let mut path = "/v1/projects?limit=2".to_owned();
    let mut sizes = Vec::new();
    loop {
        let (status, _, page) = send(&server, owner, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK);
        let items = page["items"].as_array().expect("items");
        sizes.push(items.len());
        seen.extend(items.iter().map(|p| p["id"].clone()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/projects?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(seen, created, "every project once, in creation order");
}

async fn another_tenants_resources_answer_exactly_like_missing_ones(server: TestServer) {
    let (a, b) = (&server.world.a.principal, &server.world.b.principal);
    let (_, _, project) = send(
        &server,
        a,
        Method::POST,
        "/v1/projects",
        Some(json!({"name": "A's secret"})),
    )
    .await;
    let pid = project["id"].as_str().expect("id").to_owned();
    let (_, _, task) = send(
        &server,
        a,
        Method::POST,
        &format!("/v1/projects/{pid}/tasks"),
        Some(json!({"title": "A's task"})),
    )
    .await;
    let tid = task["id"].as_str().expect("id").to_owned();
    let random = tenantkit_server::domain::ProjectId::new().to_string();

    for (method, path, body) in [
        (Method::GET, format!("/v1/projects/{}", "{id}"), None),
        (
            Method::PATCH,
            format!("/v1/projects/{}", "{id}"),
            Some(json!({"name": "pwned"})),
        ),
        (Method::DELETE, format!("/v1/projects/{}", "{id}"), None),
        (Method::GET, format!("/v1/projects/{}/tasks", "{id}"), None),
        (
            Method::POST,
            format!("/v1/projects/{}/tasks", "{id}"),
            Some(json!({"title": "intruder"})),
        ),
    ] {
        let foreign = send(
            &server,
            b,
            method.clone(),
            &path.replace("{id}", &pid),
            body.clone(),
        )
        .await;
        let missing = send(
            &server,
            b,
            method.clone(),
            &path.replace("{id}", &random),
            body,
        )
        .await;
        assert_eq!(foreign.0, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(
            foreign.2, missing.2,
            "{method} {path}: same body as a random id"
        );
    }
    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(json!({"title": "pwned"}))),
        (Method::DELETE, None),
    ] {
        let (status, _, _) = send(
            &server,
            b,
            method.clone(),
            &format!("/v1/tasks/{tid}"),
            body,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} task");
    }
    let (_, _, b_list) = send(&server, b, Method::GET, "/v1/projects", None).await;
    assert_eq!(b_list["items"], json!([]));
    // A's data is intact.
    let (_, _, still) = send(
        &server,
        a,
        Method::GET,
        &format!("/v1/projects/{pid}"),
        None,
    )
    .await;
    assert_eq!(still, project);
    let (_, _, still) = send(&server, a, Method::GET, &format!("/v1/tasks/{tid}"), None).await;
    assert_eq!(still, task);
}

async fn tasks_lifecycle_and_filters(server: TestServer) {
    let owner = &server.world.a.principal;
    let (member, member_principal) = server.add_user(&server.world.a, Role::Member).await;
    let (outsider, _) = server.add_user(&server.world.b, Role::Member).await;
    let (_, _, project) = send(
        &server,
        owner,
        Method::POST,
        "/v1/projects",
        Some(json!({"name": "Tasks"})),
    )
    .await;
    let tasks = format!("/v1/projects/{}/tasks", project["id"].as_str().expect("id"));

    let (status, _, t1) = send(&server, &member_principal, Method::POST, &tasks,
        Some(json!({"title": "Design", "status": "in_progress", "assignee_id": member.id, "due_at": "2030-05-01T12:00:00Z"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{t1}");
    assert_eq!(
        (t1["status"].clone(), t1["due_at"].clone()),
        (json!("in_progress"), json!("2030-05-01T12:00:00Z"))
    );
    let (_, _, t2) = send(
        &server,
        owner,
        Method::POST,
        &tasks,
        Some(json!({"title": "Build"})),
    )
    .await;
    assert_eq!(t2["status"], "todo");

    let (status, _, body) = send(
        &server,
        owner,
        Method::POST,
        &tasks,
        Some(json!({"title": "x", "assignee_id": outsider.id})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "an assignee must be a member: {body}"
    );
    let (status, _, _) = send(
        &server,
        owner,
        Method::POST,
        &tasks,
        Some(json!({"title": "x", "status": "blocked"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let (_, _, todo) = send(
        &server,
        owner,
        Method::GET,
        &format!("{tasks}?status=todo"),
        None,
    )
    .await;
    assert_eq!(todo["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(todo["items"][0]["id"], t2["id"]);
    let (_, _, mine) = send(
        &server,
        owner,
        Method::GET,
        &format!("{tasks}?assignee_id={}", member.id),
        None,
    )
    .await;
    assert_eq!(mine["items"][0]["id"], t1["id"]);

    let t1_path = format!("/v1/tasks/{}", t1["id"].as_str().expect("id"));
    let (status, headers, done) = send(
        &server,
        owner,
        Method::PATCH,
        &t1_path,
        Some(json!({"status": "done", "assignee_id": null})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["etag"], "\"2\"");
    assert_eq!(
        (done["status"].clone(), done["assignee_id"].clone()),
        (json!("done"), Value::Null)
    );
    let (status, _, _) = send(&server, owner, Method::DELETE, &t1_path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = send(&server, owner, Method::GET, &t1_path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A task assigned to someone who has left stays editable: the assignee is checked only when
/// it changes (the record of who had it is kept).
async fn a_former_members_tasks_stay_editable(server: TestServer) {
    let owner = &server.world.a.principal;
    let (leaver, leaver_principal) = server.add_user(&server.world.a, Role::Member).await;
    let (_, _, project) = send(
        &server,
        owner,
        Method::POST,
        "/v1/projects",
        Some(json!({"name": "Handover"})),
    )
    .await;
    let tasks = format!("/v1/projects/{}/tasks", project["id"].as_str().expect("id"));
    let (status, _, task) = send(
        &server,
        &leaver_principal,
        Method::POST,
        &tasks,
        Some(json!({"title": "Half done", "assignee_id": leaver.id})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let removed = server
        .request(owner, Method::DELETE, &format!("/v1/members/{}", leaver.id))
        .send()
        .await
        .expect("send");
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    let path = format!("/v1/tasks/{}", task["id"].as_str().expect("id"));
    for patch in [
        json!({"title": "Taken over"}),
        json!({"status": "in_progress"}),
        json!({"assignee_id": leaver.id}),
    ] {
        let (status, _, body) =
            send(&server, owner, Method::PATCH, &path, Some(patch.clone())).await;
        assert_eq!(status, StatusCode::OK, "{patch}: {body}");
        assert_eq!(body["assignee_id"], json!(leaver.id), "kept");
    }
    // Assigning anew is checked: the former member cannot be given new work...
    let (_, _, other) = send(
        &server,
        owner,
        Method::POST,
        &tasks,
        Some(json!({"title": "New"})),
    )
    .await;
    let other_path = format!("/v1/tasks/{}", other["id"].as_str().expect("id"));
    let (status, _, body) = send(
        &server,
        owner,
        Method::PATCH,
        &other_path,
        Some(json!({"assignee_id": leaver.id})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // ...and the old task can be handed to a current member, or unassigned.
    let (status, _, body) = send(
        &server,
        owner,
        Method::PATCH,
        &path,
        Some(json!({"assignee_id": server.world.a.owner.id})),
    )
    .await;
    assert_eq!(
        (status, body["assignee_id"].clone()),
        (StatusCode::OK, json!(server.world.a.owner.id))
    );
    let (status, _, body) = send(
        &server,
        owner,
        Method::PATCH,
        &path,
        Some(json!({"assignee_id": null})),
    )
    .await;
    assert_eq!(
        (status, body["assignee_id"].clone()),
        (StatusCode::OK, json!(null))
    );
}

tenantkit_core::backend_tests!(fixture = tenantkit_e2e::server;
    a_former_members_tasks_stay_editable,
    project_lifecycle_with_etags,
    concurrent_patches_with_one_etag_let_exactly_one_win,
    lists_paginate_with_cursors,
    another_tenants_resources_answer_exactly_like_missing_ones,
    tasks_lifecycle_and_filters,
);

async fn concurrent_creates_all_succeed_and_the_audit_chain_holds(server: TestServer) {
    let owner = server.world.a.principal.clone();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let request = server
            .request(&owner, Method::POST, "/v1/projects")
            .json(&json!({"name": format!("c{i}")}));
        tasks.push(tokio::spawn(request.send()));
    }
    for task in tasks {
        let response = task.await.expect("join").expect("send");
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let mut tx = server
        .test_db
        .db
        .begin_read(&server.world.a.scope())
        .await
        .expect("begin");
    assert_eq!(
        tx.verify_audit_chain(None, None).await.expect("verify"),
        None
    );
    assert_eq!(tx.audit_entries(0, 100).await.expect("entries").len(), 30);
}

mod concurrency {
    tenantkit_core::backend_tests!(fixture = tenantkit_e2e::server; concurrent_creates_all_succeed_and_the_audit_chain_holds);
    use super::concurrent_creates_all_succeed_and_the_audit_chain_holds;
}
