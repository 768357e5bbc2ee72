//! Changes of rights take effect at once: a demoted or removed member's old access token does
//! not keep their old powers, and revoked sessions cannot spawn new ones.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantkit_e2e::{PASSWORD, TestServer};

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

async fn call(
    server: &TestServer,
    token: &str,
    method: Method,
    path: &str,
    body: Value,
) -> StatusCode {
    let body = (!body.is_null()).then_some(body);
    server
        .call_with_token(Some(token), method, path, body)
        .await
        .status
}

/// Invites `email` with `role` into the inviter's tenant and accepts; returns the tokens.
async fn join(server: &TestServer, inviter: &str, email: &str, role: &str) -> Value {
    let (status, invitation) = post(
        server,
        Some(inviter),
        "/v1/invitations",
        json!({"email": email, "role": role}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{invitation}");
    let token = server.mailed_token(email, "invited").await;
    let (status, joined) = post(
        server,
        None,
        "/v1/invitations/accept",
        json!({"token": token, "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    joined
}

async fn a_demoted_owner_cannot_use_the_old_token_to_take_back_control(server: TestServer) {
    let first = server.signup("first@example.com", "demotion").await;
    let first_token = first["access_token"].as_str().expect("token").to_owned();
    let second = join(&server, &first_token, "second@example.com", "owner").await;
    let second_token = second["access_token"].as_str().expect("token").to_owned();
    let me = server
        .call_with_token(Some(&second_token), Method::GET, "/v1/me", None)
        .await
        .body;
    let second_path = format!("/v1/members/{}", me["user"]["id"].as_str().expect("id"));
    let first_path = format!("/v1/members/{}", first["user"]["id"].as_str().expect("id"));

    // In order: who, what, and the status.
    #[rustfmt::skip]
    let steps = [
        // The first owner demotes the second to member.
        (Some(&first_token), Method::PATCH, &second_path, json!({"role": "member"}), StatusCode::OK),
        // The second's access token still says "owner", but the demotion ended its session
        // and the session check hears of it at once (the revocation bus evicts its cache):
        // the token is refused outright, not just its old rights.
        (Some(&second_token), Method::PATCH, &second_path, json!({"role": "owner"}), StatusCode::UNAUTHORIZED),
        (Some(&second_token), Method::DELETE, &first_path, Value::Null, StatusCode::UNAUTHORIZED),
        (Some(&second_token), Method::POST, &"/v1/invitations".to_owned(),
            json!({"email": "spare@example.com", "role": "admin"}), StatusCode::UNAUTHORIZED),
        // And the demotion ended their sessions in this tenant.
        (None, Method::POST, &"/v1/auth/refresh".to_owned(),
            json!({"refresh_token": second["refresh_token"]}), StatusCode::UNAUTHORIZED),
    ];
    for (token, method, path, body, want) in steps {
        let body = (!body.is_null()).then_some(body);
        let reply = server
            .call_with_token(token.map(String::as_str), method.clone(), path, body)
            .await;
        assert_eq!(reply.status, want, "{method} {path}: {}", reply.body);
    }
}

async fn a_removed_admins_pending_invitations_die(server: TestServer) {
    let boss = server.signup("boss@example.com", "invitations-die").await;
    let boss_token = boss["access_token"].as_str().expect("token").to_owned();
    let admin = join(&server, &boss_token, "admin@example.com", "admin").await;
    let admin_token = admin["access_token"].as_str().expect("token").to_owned();
    let (status, _) = post(
        &server,
        Some(&admin_token),
        "/v1/invitations",
        json!({"email": "spare@example.com", "role": "admin"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let spare = server.mailed_token("spare@example.com", "invited").await;
    let me: Value = server
        .anonymous(Method::GET, "/v1/me")
        .bearer_auth(&admin_token)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let admin_id = me["user"]["id"].as_str().expect("id").to_owned();
    assert_eq!(
        call(
            &server,
            &boss_token,
            Method::DELETE,
            &format!("/v1/members/{admin_id}"),
            Value::Null
        )
        .await,
        StatusCode::NO_CONTENT
    );
    let (status, body) = post(
        &server,
        None,
        "/v1/invitations/accept",
        json!({"token": spare, "password": PASSWORD}),
    )
    .await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("token"))
    );
}

async fn revoked_sessions_cannot_spawn_new_ones(server: TestServer) {
    let victim = server.signup("victim@example.com", "stolen-token").await;
    let stolen = victim["access_token"].as_str().expect("token").to_owned();
    // The victim ends every session (say, after noticing the theft).
    assert_eq!(
        call(
            &server,
            &stolen,
            Method::POST,
            "/v1/auth/logout-all",
            Value::Null
        )
        .await,
        StatusCode::NO_CONTENT
    );
    // The stolen access token is still within its 15 minutes, but cannot mint a new session.
    let (status, body) = post(
        &server,
        Some(&stolen),
        "/v1/auth/switch-tenant",
        json!({"tenant_id": victim["tenant"]["id"]}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );
}

async fn nul_bytes_are_refused_not_500(server: TestServer) {
    let owner_token = server.signup("nul@example.com", "nul-bytes").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(
        call(
            &server,
            &owner_token,
            Method::POST,
            "/v1/projects",
            json!({"name": "a\u{0}b"})
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        call(
            &server,
            &owner_token,
            Method::POST,
            "/v1/projects",
            json!({"name": "ok", "description": "x\u{0}y"})
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        call(
            &server,
            &owner_token,
            Method::PATCH,
            "/v1/tenant",
            json!({"name": "a\u{0}"})
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (status, _) = post(
        &server,
        None,
        "/v1/auth/signup",
        json!({"email": "n2@example.com", "password": PASSWORD, "tenant_name": "x\u{0}y"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let audit = server
        .anonymous(Method::GET, "/v1/audit-log?action=%00")
        .bearer_auth(&owner_token)
        .send()
        .await
        .expect("send");
    assert!(
        audit.status().is_success() || audit.status() == StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        audit.status()
    );
    // Line breaks in free text are fine.
    assert_eq!(
        call(
            &server,
            &owner_token,
            Method::POST,
            "/v1/projects",
            json!({"name": "ok", "description": "line 1\nline 2"})
        )
        .await,
        StatusCode::CREATED
    );
}

tenantkit_core::backend_tests!(fixture = tenantkit_e2e::server;
    a_demoted_owner_cannot_use_the_old_token_to_take_back_control,
    a_removed_admins_pending_invitations_die,
    revoked_sessions_cannot_spawn_new_ones,
    nul_bytes_are_refused_not_500,
);
