//! Revocation-aware verification (the default): a removed member's token stops working on
//! every route, and a demoted member's token carries their new role, within the session
//! check's cache period (zero here, so at once); `TENANTKIT_SESSION_CHECK=off` is the
//! documented, stateless opt-out.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tenantkit_core::{Backend, Role};
use tenantkit_e2e::TestServer;
use tenantkit_server::{Config, SessionCheckMode};

async fn uncached(backend: Backend) -> Option<TestServer> {
    let config = Config {
        session_check_ttl_ms: 0,
        ..Config::default()
    };
    TestServer::start_with(backend, config).await
}

async fn stateless(backend: Backend) -> Option<TestServer> {
    let config = Config {
        session_check: SessionCheckMode::Off,
        ..Config::default()
    };
    TestServer::start_with(backend, config).await
}

async fn a_removed_admins_token_stops_working_everywhere(server: TestServer) {
    let owner = &server.world.a.principal;
    let (admin_user, admin) = server.add_user(&server.world.a, Role::Admin).await;
    let audit = server
        .call(Some(&admin), Method::GET, "/v1/audit-log", None)
        .await;
    assert_eq!(audit.status, StatusCode::OK);
    let removed = server
        .call(
            Some(owner),
            Method::DELETE,
            &format!("/v1/members/{}", admin_user.id),
            None,
        )
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    for (method, path, body) in [
        (Method::GET, "/v1/audit-log", None),
        (Method::GET, "/v1/members", None),
        (
            Method::POST,
            "/v1/projects",
            Some(json!({"name": "after removal"})),
        ),
        (Method::GET, "/v1/me", None),
    ] {
        let reply = server.call(Some(&admin), method.clone(), path, body).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path}: {}",
            reply.body
        );
        assert_eq!(reply.body["code"], "invalid_token");
    }
}

async fn a_demoted_admins_token_carries_the_new_role(server: TestServer) {
    let owner = &server.world.a.principal;
    let (user, admin) = server.add_user(&server.world.a, Role::Admin).await;
    // Their token says admin; the owner makes them a viewer. (The demotion also ends their
    // sessions; a fresh session of the viewer shows the role comes from the database.)
    let demoted = server
        .call(
            Some(owner),
            Method::PATCH,
            &format!("/v1/members/{}", user.id),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(demoted.status, StatusCode::OK);
    let still_admin_token = server.with_live_session(&admin).await;
    assert_eq!(
        still_admin_token.role(),
        Role::Admin,
        "the token claims admin"
    );
    for (method, path, body, status) in [
        (Method::GET, "/v1/audit-log", None, StatusCode::FORBIDDEN),
        (Method::GET, "/v1/invitations", None, StatusCode::FORBIDDEN),
        (
            Method::POST,
            "/v1/projects",
            Some(json!({"name": "x"})),
            StatusCode::FORBIDDEN,
        ),
        (Method::GET, "/v1/projects", None, StatusCode::OK),
    ] {
        let reply = server
            .call(Some(&still_admin_token), method.clone(), path, body)
            .await;
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.body);
    }
    let me = server
        .call(Some(&still_admin_token), Method::GET, "/v1/me", None)
        .await;
    assert_eq!(
        me.body["role"], "viewer",
        "the current role, not the token's"
    );
}

async fn with_the_check_off_tokens_live_until_they_expire(server: TestServer) {
    let owner = &server.world.a.principal;
    let (admin_user, admin) = server.add_user(&server.world.a, Role::Admin).await;
    let removed = server
        .call(
            Some(owner),
            Method::DELETE,
            &format!("/v1/members/{}", admin_user.id),
            None,
        )
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    let audit = server
        .call(Some(&admin), Method::GET, "/v1/audit-log", None)
        .await;
    assert_eq!(
        audit.status,
        StatusCode::OK,
        "the documented trade-off of the stateless mode"
    );
}

tenantkit_core::backend_tests!(
    fixture = uncached;
    a_removed_admins_token_stops_working_everywhere,
    a_demoted_admins_token_carries_the_new_role;
    fixture = stateless;
    with_the_check_off_tokens_live_until_they_expire;
);
