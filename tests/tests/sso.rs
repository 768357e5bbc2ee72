//! Single sign-on through the reference server's HTTP API and a real OpenID provider (npm
//! `oidc-provider`, started by scripts/with-services.sh on 127.0.0.1): an admin connects the
//! tenant, a browser goes `GET /v1/sso/{slug}/login` → the provider → `GET /v1/sso/callback`
//! (with the cookie the login set) → the app's URL with a single-use code → `POST
//! /v1/auth/sso/exchange` → `/v1/me`; replays, an open redirect, bad bodies and anonymous
//! callers are refused with problems; discovery by email; "SSO required" through `PATCH
//! /v1/tenant`.

use std::collections::HashMap;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tenantkit_core::testing::required_service;
use tenantkit_e2e::{PASSWORD, TestServer};
use tenantkit_server::Config;

async fn server(backend: tenantkit_core::Backend) -> Option<(TestServer, String)> {
    let issuer = required_service(
        "TENANTKIT_TEST_OIDC_ISSUER",
        "single sign-on (oidc-provider)",
    )?;
    let server = TestServer::start_at(backend, |base| Config {
        public_url: Some(base.to_owned()),
        sso_app_url: Some(format!("{base}/app")),
        sso_allow_hosts: vec!["127.0.0.1".into()],
        ..Config::default()
    })
    .await?;
    Some((server, issuer))
}

/// A browser without redirects: cookies kept by hand, per host.
struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

impl Browser {
    fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookies: HashMap::new(),
        }
    }

    /// Sends `request` with the browser's cookies; keeps the ones set; answers the reply and
    /// its `Location`, made absolute against `base`.
    async fn send(
        &mut self,
        request: reqwest::RequestBuilder,
        base: &str,
    ) -> (reqwest::Response, Option<String>) {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let reply = request
            .header("cookie", cookie)
            .send()
            .await
            .expect("request");
        for value in reply.headers().get_all("set-cookie") {
            let pair = value
                .to_str()
                .expect("ascii")
                .split(';')
                .next()
                .expect("pair");
            if let Some((name, value)) = pair.split_once('=') {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let location = reply.headers().get("location").map(|l| {
            let l = l.to_str().expect("ascii");
            if l.starts_with('/') {
                format!("{base}{l}")
            } else {
                l.to_owned()
            }
        });
        (reply, location)
    }

    /// From the provider's authorization URL to the server's callback URL, signing in as
    /// `email`.
    async fn through_provider(
        &mut self,
        issuer: &str,
        mut url: String,
        email: &str,
        callback: &str,
    ) -> String {
        let mut posted = false;
        for _ in 0..10 {
            if url.starts_with(callback) {
                return url;
            }
            let request = if url.contains("/interaction/") && !posted {
                posted = true;
                let uid = url.rsplit('/').next().expect("uid").to_owned();
                self.http
                    .post(format!("{issuer}/interaction/{uid}/login"))
                    .form(&[("email", email), ("email_verified", "true")])
            } else {
                self.http.get(&url)
            };
            let (reply, location) = self.send(request, issuer).await;
            url = location.unwrap_or_else(|| panic!("a redirect from {url}: {}", reply.status()));
        }
        panic!("the provider never sent the browser back");
    }
}

async fn a_tenant_signs_in_through_its_provider(fixture: (TestServer, String)) {
    let (server, issuer) = fixture;
    let base = server.base_url.clone();
    let signed_up = server.signup("owner@corp.test", "corp").await;
    let owner = signed_up["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let client_id = format!("e2e-{}", tenantkit_core::SessionId::new());
    let registered = reqwest::Client::new()
        .post(format!("{issuer}/test/clients"))
        .json(&json!({
            "client_id": client_id, "client_secret": "e2e-secret-value",
            "redirect_uris": [format!("{base}/v1/sso/callback")],
        }))
        .send()
        .await
        .expect("register");
    assert!(registered.status().is_success());

    // The admin API: bad bodies and callers are refused; the secret never comes back.
    let connections = "/v1/sso/connections";
    let anonymous = server.call(None, Method::GET, connections, None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    for (body, status) in [
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"issuer": issuer, "client_id": client_id, "client_secret": "x", "extra": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"issuer": "http://idp.example.com", "client_id": "c", "client_secret": "s"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"issuer": "https://169.254.169.254", "client_id": "c", "client_secret": "s"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let reply = server
            .call_with_token(Some(&owner), Method::POST, connections, Some(body.clone()))
            .await;
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
        assert!(reply.body["code"].is_string(), "{}", reply.body);
    }
    let created = server
        .call_with_token(
            Some(&owner),
            Method::POST,
            connections,
            Some(json!({
                "issuer": issuer, "client_id": client_id, "client_secret": "e2e-secret-value",
                "domains": ["corp.test"],
            })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert!(!created.body.to_string().contains("e2e-secret-value"));
    assert_eq!(created.body["domains"][0]["verified"], false);
    let slug = tenantkit_core::Slug::parse("corp").expect("slug");
    server
        .sso
        .as_ref()
        .expect("sso")
        .verify_domain(&tenantkit_core::ClientInfo::operator(), &slug, "corp.test")
        .await
        .expect("the operator verifies the domain");

    // Discovery by email.
    let found = server
        .call(
            None,
            Method::POST,
            "/v1/sso/discover",
            Some(json!({"email": "jo@corp.test"})),
        )
        .await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert_eq!(found.body["login_url"], format!("{base}/v1/sso/corp/login"));
    let missing = server
        .call(
            None,
            Method::POST,
            "/v1/sso/discover",
            Some(json!({"email": "jo@nowhere.test"})),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // No open redirect; unknown tenants are not found.
    let mut browser = Browser::new();
    let (open, _) = browser
        .send(
            browser.http.get(format!(
                "{base}/v1/sso/corp/login?redirect_to=https%3A%2F%2Fevil.example%2F"
            )),
            &base,
        )
        .await;
    assert_eq!(open.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let (unknown, _) = browser
        .send(
            browser.http.get(format!("{base}/v1/sso/nobody/login")),
            &base,
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    // The whole flow.
    let (start, to_provider) = browser
        .send(
            browser.http.get(format!(
                "{base}/v1/sso/corp/login?redirect_to={base}/app/landing"
            )),
            &base,
        )
        .await;
    assert_eq!(start.status(), StatusCode::FOUND);
    let set_cookie = start.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        set_cookie.starts_with("tenantkit_sso=")
            && set_cookie.contains("HttpOnly")
            && set_cookie.contains("SameSite=Lax")
            && set_cookie.contains("Path=/v1/sso"),
        "{set_cookie}"
    );
    let to_provider = to_provider.expect("location");
    assert!(
        to_provider.starts_with(&issuer) && to_provider.contains("code_challenge_method=S256"),
        "{to_provider}"
    );
    let callback = browser
        .through_provider(
            &issuer,
            to_provider,
            "jo@corp.test",
            &format!("{base}/v1/sso/callback"),
        )
        .await;
    let (back, to_app) = browser.send(browser.http.get(&callback), &base).await;
    assert_eq!(back.status(), StatusCode::FOUND);
    assert_eq!(back.headers()["cache-control"], "no-store");
    let to_app = to_app.expect("location");
    assert!(
        to_app.starts_with(&format!("{base}/app/landing?sso_code=sso_")),
        "{to_app}"
    );
    // The callback again (a replayed state): a problem, not a second code.
    let (replayed, _) = browser.send(browser.http.get(&callback), &base).await;
    assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED);
    let problem: serde_json::Value = replayed.json().await.expect("json");
    assert_eq!(problem["code"], "sso_failed");

    let code = to_app.split("sso_code=").nth(1).expect("code").to_owned();
    let exchanged = server
        .call(
            None,
            Method::POST,
            "/v1/auth/sso/exchange",
            Some(json!({"code": code})),
        )
        .await;
    assert_eq!(exchanged.status, StatusCode::OK, "{}", exchanged.body);
    assert_eq!(exchanged.headers["cache-control"], "no-store");
    let token = exchanged.body["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let caller = server.tokens.verify(&token).expect("a valid token");
    assert!(caller.has_amr("sso"));
    let me = server
        .call_with_token(Some(&token), Method::GET, "/v1/me", None)
        .await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert_eq!(me.body["tenant"]["slug"], "corp");
    assert_eq!(me.body["user"]["email"], "jo@corp.test");
    let again = server
        .call(
            None,
            Method::POST,
            "/v1/auth/sso/exchange",
            Some(json!({"code": code})),
        )
        .await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert_eq!(again.body["code"], "invalid_token");
    for bad in [
        json!({}),
        json!({"code": 5}),
        json!({"code": "x", "more": 1}),
    ] {
        let reply = server
            .call(
                None,
                Method::POST,
                "/v1/auth/sso/exchange",
                Some(bad.clone()),
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    // A member (not an admin) does not see the connections.
    let listed = server
        .call_with_token(Some(&token), Method::GET, connections, None)
        .await;
    assert_eq!(listed.status, StatusCode::FORBIDDEN);

    // SSO required: the owner keeps the break-glass password sign-in.
    let required = server
        .call_with_token(
            Some(&owner),
            Method::PATCH,
            "/v1/tenant",
            Some(json!({"sso_required": true})),
        )
        .await;
    assert_eq!(required.status, StatusCode::OK, "{}", required.body);
    assert_eq!(required.body["sso_required"], true);
    let owner_login = server
        .call(
            None,
            Method::POST,
            "/v1/auth/login",
            Some(json!({"email": "owner@corp.test", "password": PASSWORD})),
        )
        .await;
    assert_eq!(owner_login.status, StatusCode::OK, "{}", owner_login.body);

    // A link URL for a signed-in account: single use, starting a login.
    let link = server
        .call_with_token(Some(&owner), Method::POST, "/v1/sso/link", None)
        .await;
    assert_eq!(link.status, StatusCode::CREATED, "{}", link.body);
    assert_eq!(link.headers["cache-control"], "no-store");
    let link_url = link.body["link_url"].as_str().expect("url").to_owned();
    assert!(
        link_url.starts_with(&format!("{base}/v1/sso/link/")),
        "{link_url}"
    );
    let (opened, to_provider) = browser.send(browser.http.get(&link_url), &base).await;
    assert_eq!(opened.status(), StatusCode::FOUND);
    assert!(to_provider.expect("location").starts_with(&issuer));
    let (again, _) = browser.send(browser.http.get(&link_url), &base).await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    let anonymous = server.call(None, Method::POST, "/v1/sso/link", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    // Deleting the connection (admin): not the last one while SSO is required.
    let listed = server
        .call_with_token(Some(&owner), Method::GET, connections, None)
        .await;
    let id = listed.body[0]["id"].as_str().expect("id").to_owned();
    let kept = server
        .call_with_token(
            Some(&owner),
            Method::DELETE,
            &format!("{connections}/{id}"),
            None,
        )
        .await;
    assert_eq!(kept.status, StatusCode::CONFLICT, "{}", kept.body);
    let off = server
        .call_with_token(
            Some(&owner),
            Method::PATCH,
            "/v1/tenant",
            Some(json!({"sso_required": false})),
        )
        .await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.body);
    let deleted = server
        .call_with_token(
            Some(&owner),
            Method::DELETE,
            &format!("{connections}/{id}"),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = server
        .call_with_token(
            Some(&owner),
            Method::DELETE,
            &format!("{connections}/{id}"),
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let bad_id = server
        .call_with_token(
            Some(&owner),
            Method::DELETE,
            &format!("{connections}/not-an-id"),
            None,
        )
        .await;
    assert!(bad_id.status.is_client_error() && bad_id.body["code"].is_string());
}

tenantkit_core::backend_tests!(
    fixture = server;
    a_tenant_signs_in_through_its_provider
);
