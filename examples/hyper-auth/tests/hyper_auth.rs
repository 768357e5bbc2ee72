//! The example over a real socket: the auth layers work without axum.

use hyper_auth::serve;
use tenantkit_auth::{AccessTokens, JwtConfig, KeySet, SigningKey};
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
    tokio::spawn(serve(listener, tokens.clone()));
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
