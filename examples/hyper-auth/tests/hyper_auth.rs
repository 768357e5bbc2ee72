//! The example over a real socket: the auth layers work without axum.

use hyper_auth::serve;
use tenantkit_auth::{AccessTokens, JwtConfig, KeySet, SigningKey};
use tenantkit_core::amr;
use tenantkit_core::{Principal, Role, SessionId, TenantId, UserId};
use tokio::net::TcpListener;

#[tokio::test]
async fn the_layers_protect_a_plain_hyper_server() {
    let tokens = AccessTokens::new(
        KeySet::new(SigningKey::generate_ed25519().expect("key")),
        JwtConfig::new("i", "a"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let realtime = tenantkit_realtime::Realtime::builder(tokens.clone()).build();
    tokio::spawn(serve(listener, tokens.clone(), realtime));
    let client = reqwest::Client::new();
    let token = |role| {
        tokens
            .issue(&Principal::new(
                UserId::new(),
                TenantId::new(),
                role,
                [],
                SessionId::new(),
            ))
            .expect("issue")
            .token
    };

    let anonymous = client
        .get(format!("{base}/hello"))
        .send()
        .await
        .expect("send");
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["content-type"],
        "application/problem+json"
    );
    assert!(anonymous.headers().contains_key("www-authenticate"));
    let body: serde_json::Value = anonymous.json().await.expect("json");
    assert_eq!(body["code"], "unauthenticated");

    let forged = client
        .get(format!("{base}/hello"))
        .bearer_auth("eyJhbGciOiJub25lIn0.e30.")
        .send()
        .await
        .expect("send");
    assert_eq!(forged.status(), 401);

    let member = token(Role::Member);
    let hello = client
        .get(format!("{base}/hello"))
        .bearer_auth(&member)
        .send()
        .await
        .expect("send");
    assert_eq!(hello.status(), 200);
    assert!(hello.text().await.expect("text").contains("(member)"));

    let denied = client
        .get(format!("{base}/admin"))
        .bearer_auth(&member)
        .send()
        .await
        .expect("send");
    assert_eq!(denied.status(), 403);
    let admin = client
        .get(format!("{base}/admin"))
        .bearer_auth(token(Role::Admin))
        .send()
        .await
        .expect("send");
    assert_eq!(admin.status(), 200);

    let missing = client
        .get(format!("{base}/nope"))
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status(), 404);
}

/// A server holding only the issuer's published JWKS (no private key, no refresh secret, no
/// session store, no database) accepts the issuer's tokens through a key rotation.
#[tokio::test]
async fn a_server_with_public_keys_only_verifies_the_issuers_tokens() {
    let config = JwtConfig::new("issuer", "api");
    let issuer = AccessTokens::new(
        KeySet::new(SigningKey::generate_ed25519().expect("key")),
        config.clone(),
    );
    let jwks = || issuer.keys().jwks().to_string();
    let verifier = AccessTokens::new(KeySet::from_jwks(&jwks()).expect("jwks"), config);
    assert!(verifier.keys().is_verify_only());
    assert!(
        verifier.issue(&principal(Role::Admin)).is_err(),
        "cannot sign"
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let realtime = tenantkit_realtime::Realtime::builder(verifier.clone()).build();
    tokio::spawn(serve(listener, verifier.clone(), realtime));
    let client = reqwest::Client::new();
    let status = |token: String| {
        let request = client.get(format!("{base}/admin")).bearer_auth(token);
        async move { request.send().await.expect("send").status() }
    };
    let issue = |role| {
        issuer
            .issue(&principal(role).with_amr([amr::PASSWORD.to_owned()]))
            .expect("issue")
            .token
    };

    let old = issue(Role::Admin);
    assert_eq!(status(old.clone()).await, 200);
    assert_eq!(status(issue(Role::Member)).await, 403);

    // The issuer rotates; the server reloads the JWKS: the old and the new kid both verify.
    issuer.replace_keys(
        issuer
            .keys()
            .rotate(SigningKey::generate_ed25519().expect("key")),
    );
    let new = issue(Role::Admin);
    assert_eq!(status(new.clone()).await, 401, "not loaded yet");
    verifier.replace_keys(KeySet::from_jwks(&jwks()).expect("jwks"));
    assert_eq!(status(old.clone()).await, 200);
    assert_eq!(status(new.clone()).await, 200);
}

fn principal(role: Role) -> Principal {
    Principal::new(UserId::new(), TenantId::new(), role, [], SessionId::new())
}
