//! Password reset and email verification over HTTP: single-use, expiring, hashed tokens;
//! no account enumeration; a reset ends every session.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantkit_e2e::{PASSWORD, TestServer, problem};

async fn post(server: &TestServer, path: &str, body: Value) -> (StatusCode, Value) {
    let reply = server.call(None, Method::POST, path, Some(body)).await;
    (reply.status, reply.body)
}

async fn password_reset_is_single_use_and_ends_every_session(server: TestServer) {
    let account = server.signup("forgetful@example.com", "forgetful").await;
    let (known, known_body) = post(
        &server,
        "/v1/auth/password-reset/request",
        json!({"email": "forgetful@example.com"}),
    )
    .await;
    let (unknown, unknown_body) = post(
        &server,
        "/v1/auth/password-reset/request",
        json!({"email": "ghost@example.com"}),
    )
    .await;
    assert_eq!(
        (known, unknown),
        (StatusCode::ACCEPTED, StatusCode::ACCEPTED)
    );
    assert_eq!(known_body, unknown_body, "no account enumeration");
    let token = server.mailed_token("forgetful@example.com", "Reset").await;
    assert!(
        server
            .mailer
            .sent()
            .iter()
            .all(|m| m.to != "ghost@example.com")
    );

    // A weak new password is refused without spending the token.
    let (status, body) = post(
        &server,
        "/v1/auth/password-reset/confirm",
        json!({"token": token, "new_password": "password1234"}),
    )
    .await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("new_password"))
    );
    let (status, _) = post(
        &server,
        "/v1/auth/password-reset/confirm",
        json!({"token": token, "new_password": "a brand new passphrase"}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Single use.
    let (status, body) = post(
        &server,
        "/v1/auth/password-reset/confirm",
        json!({"token": token, "new_password": "yet another passphrase"}),
    )
    .await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("token"))
    );
    // Every session ended; the new password works, the old one does not.
    let (status, _) = post(
        &server,
        "/v1/auth/refresh",
        json!({"refresh_token": account["refresh_token"]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = post(
        &server,
        "/v1/auth/login",
        json!({"email": "forgetful@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = post(
        &server,
        "/v1/auth/login",
        json!({"email": "forgetful@example.com", "password": "a brand new passphrase"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

async fn only_the_newest_reset_link_works_and_garbage_is_refused(server: TestServer) {
    server.signup("twice@example.com", "twice").await;
    post(
        &server,
        "/v1/auth/password-reset/request",
        json!({"email": "twice@example.com"}),
    )
    .await;
    let first = server.mailed_token("twice@example.com", "Reset").await;
    post(
        &server,
        "/v1/auth/password-reset/request",
        json!({"email": "twice@example.com"}),
    )
    .await;
    let resets = || {
        server
            .mailer
            .sent()
            .into_iter()
            .filter(|m| m.to == "twice@example.com" && m.subject.contains("Reset"))
            .count()
    };
    for _ in 0..600 {
        if resets() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(resets(), 2, "two reset emails");
    let second = server.mailed_token("twice@example.com", "Reset").await;
    assert_ne!(first, second);
    for bad in [first.as_str(), "garbage", "", &"A".repeat(5000)] {
        let (status, body) = post(
            &server,
            "/v1/auth/password-reset/confirm",
            json!({"token": bad, "new_password": "a brand new passphrase"}),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed")),
            "{bad}"
        );
    }
    // A verification token is not a reset token.
    let verification = server.mailed_token("twice@example.com", "Verify").await;
    let (status, _) = post(
        &server,
        "/v1/auth/password-reset/confirm",
        json!({"token": verification, "new_password": "a brand new passphrase"}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "tokens only work for their own purpose"
    );
    let (status, _) = post(
        &server,
        "/v1/auth/password-reset/confirm",
        json!({"token": second, "new_password": "a brand new passphrase"}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

async fn email_verification_marks_the_address_verified(server: TestServer) {
    let account = server.signup("verify-me@example.com", "verify-me").await;
    assert!(account["user"]["email_verified_at"].is_null());
    let token = server.mailed_token("verify-me@example.com", "Verify").await;
    let (status, _) = post(
        &server,
        "/v1/auth/verify-email/confirm",
        json!({"token": token}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let me: Value = server
        .anonymous(Method::GET, "/v1/me")
        .bearer_auth(account["access_token"].as_str().expect("a"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert!(me["user"]["email_verified_at"].is_string(), "{me}");
    let (status, _) = post(
        &server,
        "/v1/auth/verify-email/confirm",
        json!({"token": token}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "single use");
    let anonymous = server
        .anonymous(Method::POST, "/v1/auth/verify-email/request")
        .send()
        .await
        .expect("send");
    assert_eq!(problem(anonymous).await["code"], "unauthenticated");
}

tenantkit_core::backend_tests!(fixture = tenantkit_e2e::server;
    password_reset_is_single_use_and_ends_every_session,
    only_the_newest_reset_link_works_and_garbage_is_refused,
    email_verification_marks_the_address_verified,
);
