//! Tenant settings, members and roles, and the audit-log endpoint over HTTP.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantkit_auth::flows::UserAdded;
use tenantkit_core::{ClientInfo, Principal, Role, TenantId};
use tenantkit_e2e::{PASSWORD, TestServer, id, problem};

async fn send(
    server: &TestServer,
    who: &Principal,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let reply = server.call(Some(who), method, path, body).await;
    (reply.status, reply.body)
}

async fn tenant_settings_follow_permissions(server: TestServer) {
    let (_, member) = server.add_user(&server.world.a, Role::Member).await;
    let (_, admin) = server.add_user(&server.world.a, Role::Admin).await;
    let (status, tenant) = send(&server, &member, Method::GET, "/v1/tenant", None).await;
    assert_eq!(
        (status, tenant["slug"].clone()),
        (StatusCode::OK, json!(server.world.a.tenant.slug.as_str()))
    );
    let (status, body) = send(
        &server,
        &member,
        Method::PATCH,
        "/v1/tenant",
        Some(json!({"name": "Hijacked"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let (status, renamed) = send(
        &server,
        &admin,
        Method::PATCH,
        "/v1/tenant",
        Some(json!({"name": "  Alpha Two "})),
    )
    .await;
    assert_eq!(
        (status, renamed["name"].as_str()),
        (StatusCode::OK, Some("Alpha Two"))
    );
    assert_eq!(renamed["slug"], tenant["slug"], "the slug never changes");
    let (status, _) = send(
        &server,
        &admin,
        Method::PATCH,
        "/v1/tenant",
        Some(json!({"name": " "})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = send(
        &server,
        &admin,
        Method::PATCH,
        "/v1/tenant",
        Some(json!({"name": "x", "slug": "new-slug"})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "slug is not patchable"
    );
}

async fn roles_follow_the_rules_and_an_owner_always_remains(server: TestServer) {
    let owner = server.world.a.principal.clone();
    let (admin_user, admin) = server.add_user(&server.world.a, Role::Admin).await;
    let (member_user, _) = server.add_user(&server.world.a, Role::Member).await;
    let (viewer_user, viewer) = server.add_user(&server.world.a, Role::Viewer).await;
    let path = |user: &tenantkit_core::User| format!("/v1/members/{}", user.id);
    let owner_path = format!("/v1/members/{}", owner.user_id());

    // Listing with pagination.
    let (status, page) = send(&server, &viewer, Method::GET, "/v1/members?limit=2", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    assert!(
        page["items"][0]["email"]
            .as_str()
            .is_some_and(|e| e.contains('@')),
        "{page}"
    );
    assert!(page["items"][0]["role"].is_string() && page["items"][0]["joined_at"].is_string());
    let cursor = page["next_cursor"].as_str().expect("more pages").to_owned();
    let (_, rest) = send(
        &server,
        &viewer,
        Method::GET,
        &format!("/v1/members?limit=2&cursor={cursor}"),
        None,
    )
    .await;
    assert_eq!(rest["items"].as_array().map(Vec::len), Some(2));

    // Each step in order: who, what, the status, a body field to check, and why.
    let (member_path, admin_path, viewer_path) =
        (path(&member_user), path(&admin_user), path(&viewer_user));
    let role = |role: &str| Some(json!({ "role": role }));
    #[rustfmt::skip]
    let steps = [
        (&viewer, Method::PATCH, &member_path, role("viewer"), StatusCode::FORBIDDEN, None, "viewers manage nobody"),
        (&admin, Method::PATCH, &member_path, role("admin"), StatusCode::OK, Some(("role", "admin")), "admins manage members"),
        (&admin, Method::PATCH, &admin_path, role("owner"), StatusCode::FORBIDDEN, None, "no self-escalation to owner"),
        (&admin, Method::PATCH, &owner_path, role("member"), StatusCode::FORBIDDEN, None, "admins cannot demote owners"),
        (&admin, Method::DELETE, &owner_path, None, StatusCode::FORBIDDEN, None, "admins cannot remove owners"),
        (&admin, Method::PATCH, &member_path, role("superuser"), StatusCode::UNPROCESSABLE_ENTITY, None, "no such role"),
        // The last owner can be neither demoted nor removed.
        (&owner, Method::PATCH, &owner_path, role("admin"), StatusCode::CONFLICT, Some(("code", "conflict")), "the last owner stays"),
        (&owner, Method::DELETE, &owner_path, None, StatusCode::CONFLICT, None, "the last owner stays"),
        // Ownership transfer: promote, then step down.
        (&owner, Method::PATCH, &admin_path, role("owner"), StatusCode::OK, None, "owners grant owner"),
        (&owner, Method::PATCH, &owner_path, role("admin"), StatusCode::OK, None, "no longer the last owner"),
        // Removal; the removed member's refresh would now end their session (auth tests).
        (&admin, Method::DELETE, &viewer_path, None, StatusCode::NO_CONTENT, None, "admins remove members"),
        (&admin, Method::DELETE, &viewer_path, None, StatusCode::NOT_FOUND, None, "removed once"),
    ];
    for (who, method, target, body, want, field, why) in steps {
        let (status, answer) = send(&server, who, method.clone(), target, body).await;
        assert_eq!(status, want, "{method} {target}: {why}: {answer}");
        if let Some((name, value)) = field {
            assert_eq!(answer[name], value, "{why}");
        }
    }

    // Another tenant's member, a random id and garbage all answer the same 404.
    let b_owner = server.world.b.principal.clone();
    let foreign = send(
        &server,
        &b_owner,
        Method::PATCH,
        &path(&member_user),
        Some(json!({"role": "viewer"})),
    )
    .await;
    let random = send(
        &server,
        &b_owner,
        Method::PATCH,
        &format!("/v1/members/{}", tenantkit_core::UserId::new()),
        Some(json!({"role": "viewer"})),
    )
    .await;
    let garbage = send(
        &server,
        &b_owner,
        Method::DELETE,
        "/v1/members/not-an-id",
        None,
    )
    .await;
    assert_eq!(foreign.0, StatusCode::NOT_FOUND);
    assert_eq!(foreign.1, random.1);
    assert_eq!(garbage.1, random.1);
}

async fn the_audit_log_lists_mutations_for_admins_only(server: TestServer) {
    let owner = server.world.a.principal.clone();
    let (_, member) = server.add_user(&server.world.a, Role::Member).await;
    let (_, created) = send(
        &server,
        &member,
        Method::POST,
        "/v1/projects",
        Some(json!({"name": "Audited"})),
    )
    .await;
    let project = format!("/v1/projects/{}", created["id"].as_str().expect("id"));
    send(
        &server,
        &member,
        Method::PATCH,
        &project,
        Some(json!({"name": "Audited 2"})),
    )
    .await;
    let (_, task) = send(
        &server,
        &member,
        Method::POST,
        &format!("{project}/tasks"),
        Some(json!({"title": "t"})),
    )
    .await;
    send(&server, &member, Method::DELETE, &project, None).await;

    let (status, _) = send(&server, &member, Method::GET, "/v1/audit-log", None).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "members do not read the audit log"
    );
    let (status, log) = send(&server, &owner, Method::GET, "/v1/audit-log", None).await;
    assert_eq!(status, StatusCode::OK);
    let actions: Vec<&str> = log["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    assert_eq!(
        actions,
        [
            "project.created",
            "project.updated",
            "task.created",
            "project.deleted"
        ]
    );
    let first = &log["items"][0];
    assert_eq!(first["actor_id"], json!(member.user_id()));
    assert_eq!(
        (first["target_type"].as_str(), first["target_id"].clone()),
        (Some("project"), created["id"].clone())
    );
    assert_eq!(first["ip"], "127.0.0.1");
    assert!(
        first.get("hash").is_none() && first.get("seq").is_none(),
        "chain internals stay inside"
    );
    assert_eq!(log["items"][2]["target_id"], task["id"]);

    let (_, filtered) = send(
        &server,
        &owner,
        Method::GET,
        "/v1/audit-log?action=project.updated",
        None,
    )
    .await;
    assert_eq!(filtered["items"].as_array().map(Vec::len), Some(1));
    let (_, by_actor) = send(
        &server,
        &owner,
        Method::GET,
        &format!("/v1/audit-log?actor_id={}", owner.user_id()),
        None,
    )
    .await;
    assert_eq!(by_actor["items"], json!([]));
    let (_, future) = send(
        &server,
        &owner,
        Method::GET,
        "/v1/audit-log?since=2999-01-01T00:00:00Z",
        None,
    )
    .await;
    assert_eq!(future["items"], json!([]));
    // Walk the log one entry at a time.
    let mut path = "/v1/audit-log?limit=1".to_owned();
    let mut seen = Vec::new();
    loop {
        let (_, page) = send(&server, &owner, Method::GET, &path, None).await;
        seen.extend(
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|e| e["action"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/audit-log?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4);
    for bad in [
        "since=yesterday",
        "actor_id=bob",
        "limit=0",
        "cursor=%%%",
        "verb=x",
    ] {
        let response = server
            .request(&owner, Method::GET, &format!("/v1/audit-log?{bad}"))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        problem(response).await;
    }
    // Another tenant's admin sees none of it.
    let (_, other) = send(
        &server,
        &server.world.b.principal,
        Method::GET,
        "/v1/audit-log",
        None,
    )
    .await;
    assert_eq!(other["items"], json!([]));
}

async fn post(
    server: &TestServer,
    token: Option<&str>,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let reply = server
        .call_with_token(token, Method::POST, path, Some(body))
        .await;
    (reply.status, reply.body)
}

fn is_refused_token(status: StatusCode, body: &Value) -> bool {
    status == StatusCode::UNPROCESSABLE_ENTITY
        && body["code"] == "validation_failed"
        && body["errors"][0]["field"] == "token"
}

/// Logs `email` in (to `tenant` when given): the status and the answer.
async fn login(server: &TestServer, email: &str, tenant: Option<&str>) -> (StatusCode, Value) {
    let mut body = json!({"email": email, "password": PASSWORD});
    if let Some(tenant) = tenant {
        body["tenant"] = json!(tenant);
    }
    post(server, None, "/v1/auth/login", body).await
}

fn tenants_of(logged_in: &Value) -> Vec<TenantId> {
    logged_in["memberships"]
        .as_array()
        .expect("memberships")
        .iter()
        .map(|m| id(&m["tenant_id"]))
        .collect()
}

/// Asserts that nothing gets `roamer` (a member of `home`) into the deleted tenant `gone`:
/// not a login naming it, not a login without a tenant, not a switch.
async fn assert_no_way_in(server: &TestServer, email: &str, home: TenantId, gone: &str) {
    let gone_id = server.world.a.tenant.id;
    for wanted in [gone.to_owned(), gone_id.to_string()] {
        let (status, body) = login(server, email, Some(&wanted)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_credentials")),
            "a login to the deleted tenant ({wanted}): {body}"
        );
    }
    let (status, body) = login(server, email, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        tenants_of(&body),
        vec![home],
        "the deleted tenant is not offered"
    );
    let access = body["access_token"].as_str().expect("token").to_owned();
    let (status, body) = post(
        server,
        Some(&access),
        "/v1/auth/switch-tenant",
        json!({"tenant_id": gone_id.to_string()}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found")),
        "a switch to the deleted tenant: {body}"
    );
}

/// A deleted tenant stays deleted: its pending invitations (a member's and the operator's)
/// open nothing, and no login, switch, refresh or `user create` gets anyone into it, even
/// with rows left over from before deletions removed them.
async fn a_deleted_tenant_cannot_be_rejoined_or_entered(server: TestServer) {
    let owner = server.world.a.principal.clone();
    let slug = server.world.a.tenant.slug.to_string();
    let operator = ClientInfo::operator();
    let roamer = "roamer@example.com";
    // A user with a tenant of their own who joins A with a mailed invitation.
    let signed = server.signup(roamer, "roamer-home").await;
    let home: TenantId = id(&signed["tenant"]["id"]);
    let home_access = signed["access_token"].as_str().expect("token").to_owned();
    let invite = |email: &'static str| {
        let owner = owner.clone();
        let server = &server;
        async move {
            let reply = server
                .call(
                    Some(&owner),
                    Method::POST,
                    "/v1/invitations",
                    Some(json!({"email": email, "role": "member"})),
                )
                .await;
            assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
            server.mailed_token(email, "invited").await
        }
    };
    let token = invite(roamer).await;
    let (status, joined) = post(
        &server,
        Some(&home_access),
        "/v1/invitations/accept",
        json!({"token": token}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    let refresh_in_a = joined["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    // Two invitations still pending when A is deleted: a member's and the operator's.
    let members_token = invite("late@example.com").await;
    let added = server
        .flows
        .add_user(&operator, "operator-pick@example.com", &slug, Role::Viewer)
        .await
        .expect("invite");
    assert!(
        matches!(added, UserAdded::Invited { mailed: true, .. }),
        "{added:?}"
    );
    let operators_token = server
        .mailed_token("operator-pick@example.com", "invited")
        .await;

    server
        .flows
        .delete_tenant(&operator, &slug)
        .await
        .expect("delete");

    for (who, token) in [
        ("a member's", &members_token),
        ("the operator's", &operators_token),
    ] {
        let (status, body) = post(
            &server,
            None,
            "/v1/invitations/accept",
            json!({"token": token, "password": "a fresh passphrase here"}),
        )
        .await;
        assert!(
            is_refused_token(status, &body),
            "{who} invitation: {status} {body}"
        );
    }
    let (status, body) = post(
        &server,
        None,
        "/v1/auth/refresh",
        json!({"refresh_token": refresh_in_a}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_no_way_in(&server, roamer, home, &slug).await;
    // The operator cannot attach a verified account nor invite anyone to it.
    for email in [roamer, "someone-new@example.com"] {
        let added = server
            .flows
            .add_user(&operator, email, &slug, Role::Member)
            .await;
        assert!(
            matches!(
                added,
                Err(tenantkit_auth::Error::Core(tenantkit_core::Error::NotFound))
            ),
            "user create {email}: {added:?}"
        );
    }
    assert!(
        !server
            .mailer
            .sent()
            .iter()
            .any(|m| m.to == "someone-new@example.com"),
        "no invitation was mailed"
    );

    // Rows from before deletions removed them (a membership and an invitation made while
    // the tenant was live) open nothing either once the tenant is deleted.
    // On PostgreSQL even the tables' owner sees only the tenant its scope names.
    let scoped = match server.test_db.backend() {
        tenantkit_core::Backend::Postgres => format!(
            "SELECT set_config('app.tenant_id', '{}', false);",
            server.world.a.tenant.id
        ),
        _ => String::new(),
    };
    let live_again = format!("{scoped} UPDATE tenants SET deleted_at = NULL WHERE slug = '{slug}'");
    let deleted_again =
        format!("{scoped} UPDATE tenants SET deleted_at = created_at WHERE slug = '{slug}'");
    server.test_db.execute_as_owner(&live_again).await;
    let added = server
        .flows
        .add_user(&operator, roamer, &slug, Role::Member)
        .await
        .expect("attach while live");
    assert!(matches!(added, UserAdded::Attached { .. }), "{added:?}");
    server
        .flows
        .add_user(&operator, "left-over@example.com", &slug, Role::Member)
        .await
        .expect("invite while live");
    let left_over = server
        .mailed_token("left-over@example.com", "invited")
        .await;
    server.test_db.execute_as_owner(&deleted_again).await;
    assert_no_way_in(&server, roamer, home, &slug).await;
    let (status, body) = post(
        &server,
        None,
        "/v1/invitations/accept",
        json!({"token": left_over, "password": "a fresh passphrase here"}),
    )
    .await;
    assert!(
        is_refused_token(status, &body),
        "a left-over invitation: {status} {body}"
    );
}

tenantkit_core::backend_tests!(fixture = tenantkit_e2e::server;
    tenant_settings_follow_permissions,
    roles_follow_the_rules_and_an_owner_always_remains,
    the_audit_log_lists_mutations_for_admins_only,
    a_deleted_tenant_cannot_be_rejoined_or_entered,
);
