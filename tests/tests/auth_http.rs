//! Authentication over real HTTP: every /v1 route needs a valid bearer token; the JWKS is
//! public and verifies the tokens the server issues.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use tenantkit_auth::{AccessTokens, JwtConfig, KeySet, SigningKey};
use tenantkit_core::ManualClock;
use tenantkit_e2e::{TestServer, problem};

async fn every_v1_route_requires_a_valid_token(server: TestServer) {
    let project = tenantkit_server::domain::ProjectId::new();
    let routes = [
        (Method::GET, "/v1/projects".to_owned()),
        (Method::POST, "/v1/projects".to_owned()),
        (Method::GET, format!("/v1/projects/{project}")),
        (Method::PATCH, format!("/v1/projects/{project}")),
        (Method::DELETE, format!("/v1/projects/{project}")),
        (Method::GET, format!("/v1/projects/{project}/tasks")),
        (Method::POST, format!("/v1/projects/{project}/tasks")),
        (Method::GET, format!("/v1/tasks/{project}")),
    ];
    let owner = server.world.a.principal.clone();
    let foreign_keys = AccessTokens::new(
        KeySet::new(SigningKey::generate_ed25519().expect("key")),
        JwtConfig::new("tenantkit", "tenantkit-api"),
    );
    let forged = foreign_keys.issue(&owner).expect("issue").token;
    let clock = Arc::new(ManualClock::starting_now());
    clock.rewind(Duration::from_secs(3600));
    let stale = AccessTokens::with_clock(
        (*server.tokens.keys()).clone(),
        server.tokens.config().clone(),
        clock,
    );
    let expired = stale.issue(&owner).expect("issue").token;

    for (method, path) in &routes {
        let none = server
            .anonymous(method.clone(), path)
            .send()
            .await
            .expect("send");
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        assert!(
            none.headers()["www-authenticate"]
                .to_str()
                .expect("ascii")
                .starts_with("Bearer")
        );
        assert_eq!(problem(none).await["code"], "unauthenticated");

        for (token, code) in [
            (forged.as_str(), "invalid_token"),
            ("garbage", "invalid_token"),
            (expired.as_str(), "token_expired"),
        ] {
            let response = server
                .anonymous(method.clone(), path)
                .bearer_auth(token)
                .send()
                .await
                .expect("send");
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} {code}"
            );
            assert_eq!(problem(response).await["code"], code, "{method} {path}");
        }
    }
    // Unknown paths stay 404 even without a token: authentication does not reveal routes.
    let unknown = server
        .anonymous(Method::GET, "/v1/nothing-here")
        .send()
        .await
        .expect("send");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

async fn jwks_is_public_cached_and_verifies_issued_tokens(server: TestServer) {
    let response = server
        .anonymous(Method::GET, "/.well-known/jwks.json")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "public, max-age=300");
    let jwks: serde_json::Value = response.json().await.expect("json");
    let key = &jwks["keys"][0];
    assert_eq!(
        (
            key["kty"].as_str(),
            key["alg"].as_str(),
            key["use"].as_str()
        ),
        (Some("OKP"), Some("EdDSA"), Some("sig"))
    );
    assert!(key.get("d").is_none(), "no private key material");

    // A third party can verify our tokens with nothing but the JWKS (no private key).
    let verifier = AccessTokens::new(
        KeySet::from_jwks_value(&jwks).expect("jwks"),
        server.tokens.config().clone(),
    );
    assert!(verifier.keys().is_verify_only());
    let issued = server
        .tokens
        .issue(&server.world.a.principal)
        .expect("issue");
    assert_eq!(
        verifier.verify(&issued.token).expect("verify"),
        server
            .world
            .a
            .principal
            .clone()
            .with_expires_at(issued.expires_at)
    );
}

/// A server whose (default, strict) session check caches nothing, so a revocation shows at
/// once instead of within the 5 s cache period.
async fn strict(backend: tenantkit_core::Backend) -> Option<TestServer> {
    let config = tenantkit_server::Config {
        session_check_ttl_ms: 0,
        ..tenantkit_server::Config::default()
    };
    TestServer::start_with(backend, config).await
}

async fn strict_mode_refuses_access_tokens_after_logout(server: TestServer) {
    let signup: serde_json::Value = server.anonymous(Method::POST, "/v1/auth/signup")
        .json(&serde_json::json!({"email": "strict@example.com", "password": "correct horse battery staple", "tenant_name": "Strict"}))
        .send().await.expect("send").json().await.expect("json");
    let access = signup["access_token"].as_str().expect("access");
    let me = server
        .anonymous(Method::GET, "/v1/me")
        .bearer_auth(access)
        .send()
        .await
        .expect("send");
    assert_eq!(me.status(), StatusCode::OK);
    let logout = server
        .anonymous(Method::POST, "/v1/auth/logout")
        .json(&serde_json::json!({"refresh_token": signup["refresh_token"]}))
        .send()
        .await
        .expect("send");
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let after = server
        .anonymous(Method::GET, "/v1/me")
        .bearer_auth(access)
        .send()
        .await
        .expect("send");
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(problem(after).await["code"], "invalid_token");
}

tenantkit_core::backend_tests!(
    fixture = tenantkit_e2e::server;
    every_v1_route_requires_a_valid_token,
    jwks_is_public_cached_and_verifies_issued_tokens;
    fixture = strict; strict_mode_refuses_access_tokens_after_logout;
);
