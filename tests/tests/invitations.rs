//! Inviting a teammate and accepting, and every misuse of an invitation.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantkit_core::{Principal, Role};
use tenantkit_e2e::TestServer;

async fn send(
    server: &TestServer,
    who: Option<&Principal>,
    method: Method,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let body = (!body.is_null()).then_some(body);
    let reply = server.call(who, method, path, body).await;
    (reply.status, reply.body)
}

async fn invite(
    server: &TestServer,
    who: &Principal,
    email: &str,
    role: &str,
) -> (StatusCode, Value) {
    send(
        server,
        Some(who),
        Method::POST,
        "/v1/invitations",
        json!({"email": email, "role": role}),
    )
    .await
}

async fn accept(server: &TestServer, who: Option<&Principal>, body: Value) -> (StatusCode, Value) {
    send(server, who, Method::POST, "/v1/invitations/accept", body).await
}

async fn a_new_teammate_joins_with_the_mailed_token(server: TestServer) {
    let owner = server.world.a.principal.clone();
    let (status, invitation) = invite(&server, &owner, "Newbie@Example.com", "member").await;
    assert_eq!(status, StatusCode::CREATED, "{invitation}");
    assert_eq!(
        (invitation["email"].as_str(), invitation["role"].as_str()),
        (Some("newbie@example.com"), Some("member"))
    );
    let mailed = server.mailed_token("newbie@example.com", "invited").await;
    assert_eq!(invitation["token"].as_str(), Some(mailed.as_str()));

    // A weak password is refused, and the invitation stays usable.
    let (status, _) = accept(
        &server,
        None,
        json!({"token": mailed, "password": "password1234"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = accept(&server, None, json!({"token": mailed})).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a new account needs a password"
    );
    let (status, joined) = accept(
        &server,
        None,
        json!({"token": mailed, "password": "a teammate passphrase"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    assert_eq!(joined["role"], "member");
    let access = joined["access_token"].as_str().expect("access");
    let me = server
        .call_with_token(Some(access), Method::GET, "/v1/me", None)
        .await
        .body;
    assert_eq!(me["tenant"]["id"], json!(server.world.a.tenant.id));
    assert!(
        me["user"]["email_verified_at"].is_null(),
        "the inviter saw the token too: no proof of the mailbox"
    );
    server.mailed_token("newbie@example.com", "Verify").await;
    // The new member creates a task right away.
    let project = server
        .call_with_token(
            Some(access),
            Method::POST,
            "/v1/projects",
            Some(json!({"name": "First"})),
        )
        .await
        .body;
    let tasks = format!("/v1/projects/{}/tasks", project["id"].as_str().expect("id"));
    let task = server
        .call_with_token(
            Some(access),
            Method::POST,
            &tasks,
            Some(json!({"title": "Say hello"})),
        )
        .await;
    assert_eq!(task.status, StatusCode::CREATED);

    // Single use.
    let (status, _) = accept(
        &server,
        None,
        json!({"token": mailed, "password": "a teammate passphrase"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // Audited.
    let (_, log) = send(
        &server,
        Some(&owner),
        Method::GET,
        "/v1/audit-log?action=invitation.accepted",
        Value::Null,
    )
    .await;
    assert_eq!(log["items"].as_array().map(Vec::len), Some(1));
}

async fn invitation_misuse_is_refused(server: TestServer) {
    let db = &server.test_db.db;
    let owner = server.world.a.principal.clone();
    let (_, admin) = server.add_user(&server.world.a, Role::Admin).await;
    let (member_user, member) = server.add_user(&server.world.a, Role::Member).await;
    assert_eq!(
        invite(&server, &member, "x@example.com", "viewer").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        invite(&server, &admin, "x@example.com", "owner").await.0,
        StatusCode::FORBIDDEN,
        "admins cannot create owners"
    );
    assert_eq!(
        invite(&server, &owner, "x@example.com", "owner").await.0,
        StatusCode::CREATED,
        "owners can"
    );
    assert_eq!(
        invite(&server, &admin, member_user.email.as_str(), "viewer")
            .await
            .0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        invite(&server, &admin, "not-an-email", "viewer").await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        invite(&server, &admin, "y@example.com", "god").await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // An existing account (B's owner) is invited to A.
    let b_owner = server.with_live_session(&server.world.b.principal).await;
    let b_email = server.world.b.owner.email.to_string();
    let (_, invitation) = invite(&server, &admin, &b_email, "viewer").await;
    let token = invitation["token"].as_str().expect("token").to_owned();
    let (status, body) = accept(
        &server,
        None,
        json!({"token": token, "password": "whatever passphrase"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated")),
        "must log in as that account"
    );
    let (status, _) = accept(&server, Some(&member), json!({"token": token})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "someone else's invitation");
    let (status, joined) = accept(&server, Some(&b_owner), json!({"token": token})).await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    assert_eq!(joined["tenant_id"], json!(server.world.a.tenant.id));
    let memberships = db
        .memberships_of(server.world.b.owner.id)
        .await
        .expect("memberships");
    assert_eq!(memberships.len(), 2, "B's owner is now also A's viewer");
    for garbage in ["", "nope", &"A".repeat(4000)] {
        let (status, _) = accept(
            &server,
            None,
            json!({"token": garbage, "password": "a teammate passphrase"}),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    }
}

tenantkit_core::backend_tests!(fixture = tenantkit_e2e::server;
    a_new_teammate_joins_with_the_mailed_token,
    invitation_misuse_is_refused
);

async fn pending_invitations_can_be_listed_and_revoked(server: TestServer) {
    let owner = server.world.a.principal.clone();
    let (_, member) = server.add_user(&server.world.a, Role::Member).await;
    let (_, first) = invite(&server, &owner, "one@example.com", "viewer").await;
    invite(&server, &owner, "two@example.com", "member").await;

    let (status, pending) = send(
        &server,
        Some(&owner),
        Method::GET,
        "/v1/invitations",
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let items = pending["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    let text = pending.to_string();
    assert!(
        !text.contains(first["token"].as_str().expect("token")) && !text.contains("token_hash"),
        "never the token"
    );
    let (status, _) = send(
        &server,
        Some(&member),
        Method::GET,
        "/v1/invitations",
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let path = format!("/v1/invitations/{}", first["id"].as_str().expect("id"));
    let revoke = server
        .request(&owner, Method::DELETE, &path)
        .send()
        .await
        .expect("send");
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
    let (status, _) = accept(
        &server,
        None,
        json!({"token": first["token"], "password": "a teammate passphrase"}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a revoked invitation no longer works"
    );
    let again = server
        .request(&owner, Method::DELETE, &path)
        .send()
        .await
        .expect("send");
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    // Another tenant cannot see or revoke it.
    let (_, second_page) = send(
        &server,
        Some(&owner),
        Method::GET,
        "/v1/invitations",
        Value::Null,
    )
    .await;
    let second = second_page["items"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let foreign = server
        .request(
            &server.world.b.principal,
            Method::DELETE,
            &format!("/v1/invitations/{second}"),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND);
    let (_, b_list) = send(
        &server,
        Some(&server.world.b.principal),
        Method::GET,
        "/v1/invitations",
        Value::Null,
    )
    .await;
    assert_eq!(b_list["items"], json!([]));
}

mod listing {
    tenantkit_core::backend_tests!(fixture = tenantkit_e2e::server; pending_invitations_can_be_listed_and_revoked);
    use super::pending_invitations_can_be_listed_and_revoked;
}
