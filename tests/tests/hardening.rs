//! Security headers on every answer, and CORS only for configured origins.

use reqwest::{Method, StatusCode};
use tenantkit_core::Backend;
use tenantkit_e2e::TestServer;
use tenantkit_server::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_security_headers() {
    let Some(server) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    let owner = server.world.a.principal.clone();
    for response in [
        server
            .anonymous(Method::GET, "/healthz")
            .send()
            .await
            .expect("send"),
        server
            .anonymous(Method::GET, "/v1/projects")
            .send()
            .await
            .expect("send"),
        server
            .anonymous(Method::GET, "/nope")
            .send()
            .await
            .expect("send"),
        server
            .request(&owner, Method::GET, "/v1/projects")
            .send()
            .await
            .expect("send"),
    ] {
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert_eq!(
            headers["content-security-policy"],
            "default-src 'none'; frame-ancestors 'none'"
        );
        assert_eq!(headers["cache-control"], "no-store", "{}", response.url());
        assert!(
            headers.get("strict-transport-security").is_none(),
            "no HSTS over plain http"
        );
    }
    let jwks = server
        .anonymous(Method::GET, "/.well-known/jwks.json")
        .send()
        .await
        .expect("send");
    assert_eq!(
        jwks.headers()["cache-control"],
        "public, max-age=300",
        "routes may set their own caching"
    );
}

/// Behind TLS (an `https` public URL), every answer asks browsers to stay on HTTPS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_public_url_turns_on_hsts() {
    let config = tenantkit_server::Config {
        public_url: Some("https://app.example.com".into()),
        ..tenantkit_server::Config::default()
    };
    let Some(server) = TestServer::start_with(Backend::Sqlite, config).await else {
        return;
    };
    for path in ["/healthz", "/v1/projects", "/nope", "/docs"] {
        let response = server
            .anonymous(Method::GET, path)
            .send()
            .await
            .expect("send");
        assert_eq!(
            response.headers()["strict-transport-security"],
            "max-age=31536000",
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_only_configured_origins() {
    let config = Config {
        cors_origins: vec!["https://app.example.com".into()],
        ..Config::default()
    };
    let Some(server) = TestServer::start_with(Backend::Sqlite, config).await else {
        return;
    };
    let preflight = |origin: &'static str| {
        server
            .anonymous(Method::OPTIONS, "/v1/projects")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com").await.expect("send");
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        allowed
            .headers()
            .get("access-control-allow-credentials")
            .is_none(),
        "bearer tokens, no cookies"
    );
    let denied = preflight("https://evil.example").await.expect("send");
    assert!(
        denied
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let simple = server
        .anonymous(Method::GET, "/healthz")
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("send");
    assert!(
        simple
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    // Default: no cross-origin access at all.
    let Some(closed) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    let response = closed
        .anonymous(Method::GET, "/healthz")
        .header("origin", "https://app.example.com")
        .send()
        .await
        .expect("send");
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}
