//! The tower layers on plain `http` services (no axum): 401 with a challenge and a problem
//! body, the verified principal in extensions, 403 for missing permissions and scopes.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use tenantkit_auth::{AccessTokens, JwtAuthLayer, JwtConfig, KeySet, RequireLayer, SigningKey};
use tenantkit_core::{Permission, Principal, Role, SessionId, TenantId, UserId};
use tower::{ServiceExt as _, service_fn};

fn tokens() -> AccessTokens {
    AccessTokens::new(
        KeySet::new(SigningKey::generate_ed25519().expect("key")),
        JwtConfig::new("iss", "aud"),
    )
}

fn caller(role: Role, scopes: &[&str]) -> Principal {
    Principal::new(
        UserId::new(),
        TenantId::new(),
        role,
        scopes.iter().map(|s| (*s).to_owned()),
        SessionId::new(),
    )
}

/// Echoes the principal's user id, proving the handler saw it.
async fn echo(request: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = request
        .extensions()
        .get::<Principal>()
        .map_or_else(|| "anonymous".to_owned(), |p| p.user_id().to_string());
    Ok(Response::new(Full::from(body)))
}

async fn call<L>(layer: L, authorization: &[&str]) -> (StatusCode, http::HeaderMap, String)
where
    L: tower::Layer<tower::util::ServiceFn<fn(Request<Full<Bytes>>) -> EchoFuture>>,
    L::Service:
        tower::Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible>,
{
    let mut request = Request::builder().uri("/v1/projects");
    for value in authorization {
        request = request.header(header::AUTHORIZATION, *value);
    }
    let request = request.body(Full::default()).expect("request");
    let service = layer.layer(service_fn(
        echo_boxed as fn(Request<Full<Bytes>>) -> EchoFuture,
    ));
    let response = service.oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let body =
        String::from_utf8(body.collect().await.expect("body").to_bytes().to_vec()).expect("utf8");
    (parts.status, parts.headers, body)
}

type EchoFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>,
>;

fn echo_boxed(request: Request<Full<Bytes>>) -> EchoFuture {
    Box::pin(echo(request))
}

fn code(body: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(body).expect("problem json");
    value["code"].as_str().expect("code").to_owned()
}

#[tokio::test]
async fn a_valid_bearer_token_reaches_the_handler_with_its_principal() {
    let tokens = tokens();
    let who = caller(Role::Member, &[]);
    let token = tokens.issue(&who).expect("issue").token;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let (status, _, body) = call(
            JwtAuthLayer::new(tokens.clone()),
            &[&format!("{scheme} {token}")],
        )
        .await;
        assert_eq!((status, body), (StatusCode::OK, who.user_id().to_string()));
    }
}

#[tokio::test]
async fn missing_malformed_and_forged_credentials_are_401_problems() {
    let tokens = tokens();
    let token = tokens
        .issue(&caller(Role::Owner, &[]))
        .expect("issue")
        .token;
    let other_issuer = AccessTokens::new(
        KeySet::new(SigningKey::generate_ed25519().expect("key")),
        JwtConfig::new("iss", "aud"),
    );
    let foreign = other_issuer
        .issue(&caller(Role::Owner, &[]))
        .expect("issue")
        .token;
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![], "unauthenticated"),
        (vec!["Basic dXNlcjpwYXNz".into()], "unauthenticated"),
        (vec![token.clone()], "unauthenticated"),
        (vec!["Bearer".into()], "unauthenticated"),
        (vec!["Bearer ".into()], "invalid_token"),
        (vec!["Bearer garbage".into()], "invalid_token"),
        (vec![format!("Bearer {foreign}")], "invalid_token"),
        (
            vec![format!("Bearer {token}"), format!("Bearer {token}")],
            "invalid_token",
        ),
    ];
    for (headers, expected) in cases {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let (status, response_headers, body) =
            call(JwtAuthLayer::new(tokens.clone()), &headers).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(
            response_headers[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let challenge = response_headers[header::WWW_AUTHENTICATE]
            .to_str()
            .expect("ascii");
        assert!(
            challenge.starts_with("Bearer realm=\"tenantkit\""),
            "{challenge}"
        );
        assert_eq!(
            challenge.contains("invalid_token"),
            expected == "invalid_token"
        );
        assert_eq!(code(&body), expected, "{headers:?}");
        assert!(!body.contains(&token), "the token is never echoed");
    }
}

#[tokio::test]
async fn optional_mode_passes_anonymous_requests_but_not_bad_tokens() {
    let tokens = tokens();
    let (status, _, body) = call(JwtAuthLayer::optional(tokens.clone()), &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "anonymous"));
    let (status, _, _) = call(JwtAuthLayer::optional(tokens), &["Bearer nope"]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn permissions_and_scopes_are_403_when_missing() {
    let tokens = tokens();
    let stack = |requirement: RequireLayer| {
        tower::ServiceBuilder::new()
            .layer(JwtAuthLayer::new(tokens.clone()))
            .layer(requirement)
            .into_inner()
    };
    let viewer = tokens
        .issue(&caller(Role::Viewer, &["projects:read"]))
        .expect("issue")
        .token;
    let admin = tokens
        .issue(&caller(Role::Admin, &[]))
        .expect("issue")
        .token;
    let bearer = |t: &str| format!("Bearer {t}");

    let (status, _, body) = call(
        stack(RequireLayer::permission(Permission::WriteContent)),
        &[&bearer(&viewer)],
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "forbidden".to_owned())
    );
    let (status, _, _) = call(
        stack(RequireLayer::permission(Permission::ManageMembers)),
        &[&bearer(&admin)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(
        stack(RequireLayer::scope("projects:read")),
        &[&bearer(&viewer)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(
        stack(RequireLayer::scope("projects:write")),
        &[&bearer(&viewer)],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Without the auth layer in front, a requirement can never be met: 401, not a pass.
    let (status, _, _) = call(
        RequireLayer::permission(Permission::Read),
        &[&bearer(&admin)],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn step_up_needs_a_session_signed_in_with_the_method() {
    let tokens = tokens();
    let stack = tower::ServiceBuilder::new()
        .layer(JwtAuthLayer::new(tokens.clone()))
        .layer(RequireLayer::amr(tenantkit_core::amr::OTP))
        .into_inner();
    let password_only = caller(Role::Owner, &[]).with_amr(["pwd".to_owned()]);
    let with_otp = caller(Role::Viewer, &[]).with_amr(["pwd".to_owned(), "otp".to_owned()]);
    let bearer = |p: &Principal| format!("Bearer {}", tokens.issue(p).expect("issue").token);

    // The highest role without the method: 401 with RFC 9470's challenge, not 403.
    let (status, headers, body) = call(stack.clone(), &[&bearer(&password_only)]).await;
    assert_eq!(
        (status, code(&body)),
        (
            StatusCode::UNAUTHORIZED,
            "insufficient_user_authentication".to_owned()
        )
    );
    let challenge = headers[header::WWW_AUTHENTICATE].to_str().expect("ascii");
    assert!(
        challenge.contains(r#"error="insufficient_user_authentication""#),
        "{challenge}"
    );
    // No methods at all (a token from before `amr` existed) is the same.
    let (status, _, _) = call(stack.clone(), &[&bearer(&caller(Role::Owner, &[]))]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = call(stack.clone(), &[&bearer(&with_otp)]).await;
    assert_eq!(status, StatusCode::OK);
    // Without the auth layer in front, never a pass.
    let (status, _, body) = call(
        RequireLayer::amr(tenantkit_core::amr::OTP),
        &[&bearer(&with_otp)],
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthenticated".to_owned())
    );
}

#[tokio::test]
async fn strict_mode_refuses_tokens_of_revoked_sessions() {
    use std::sync::Arc;
    use std::time::Duration;
    use tenantkit_auth::{
        CachedSessionCheck, MemorySessionStore, RefreshConfig, RefreshSessions, StrictJwtAuthLayer,
    };

    let tokens = tokens();
    let sessions = RefreshSessions::new(
        MemorySessionStore::new(),
        &[3u8; 32],
        RefreshConfig::default(),
    )
    .expect("sessions");
    let (session, refresh) = sessions
        .start(UserId::new(), TenantId::new(), 0)
        .await
        .expect("start");
    let who = Principal::new(
        session.user_id,
        session.tenant_id,
        Role::Member,
        Vec::<String>::new(),
        session.id,
    );
    let bearer = format!("Bearer {}", tokens.issue(&who).expect("issue").token);
    // The cache's clock stands still: "lives for its TTL" must not depend on how fast this
    // machine gets from the warm-up to the check.
    let clock = Arc::new(tenantkit_core::ManualClock::new(tenantkit_core::now()));
    let strict = |ttl| {
        StrictJwtAuthLayer::new(
            tokens.clone(),
            CachedSessionCheck::with_clock(Arc::new(sessions.clone()), ttl, clock.clone()),
        )
    };

    let (status, _, body) = call_strict(strict(Duration::ZERO), &bearer).await;
    assert_eq!((status, body), (StatusCode::OK, who.user_id().to_string()));
    let cached = strict(Duration::from_secs(60));
    assert_eq!(
        call_strict(cached.clone(), &bearer).await.0,
        StatusCode::OK,
        "warms the cache"
    );

    sessions.revoke(&refresh).await.expect("logout");
    let (status, headers, body) = call_strict(strict(Duration::ZERO), &bearer).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "invalid_token".to_owned())
    );
    assert!(headers.contains_key(header::WWW_AUTHENTICATE));
    assert_eq!(
        call_strict(cached, &bearer).await.0,
        StatusCode::OK,
        "a cached answer lives for its TTL"
    );
    // Tokens of sessions that never existed are refused too.
    let ghost = Principal::new(
        UserId::new(),
        TenantId::new(),
        Role::Owner,
        Vec::<String>::new(),
        SessionId::new(),
    );
    let (status, _, _) = call_strict(
        strict(Duration::ZERO),
        &format!("Bearer {}", tokens.issue(&ghost).expect("issue").token),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn call_strict(
    layer: tenantkit_auth::StrictJwtAuthLayer,
    authorization: &str,
) -> (StatusCode, http::HeaderMap, String) {
    use tower::Layer as _;
    let request = Request::builder()
        .header(header::AUTHORIZATION, authorization)
        .body(Full::default())
        .expect("request");
    let response = layer
        .layer(service_fn(echo))
        .oneshot(request)
        .await
        .expect("infallible");
    let (parts, body) = response.into_parts();
    let body =
        String::from_utf8(body.collect().await.expect("body").to_bytes().to_vec()).expect("utf8");
    (parts.status, parts.headers, body)
}

#[tokio::test]
async fn a_principal_smuggled_in_before_the_auth_layer_is_discarded() {
    use tower::Layer as _;
    let tokens = tokens();
    let smuggled = caller(Role::Owner, &[]);
    let real = caller(Role::Viewer, &[]);
    let bearer = format!("Bearer {}", tokens.issue(&real).expect("issue").token);
    let service = |auth: JwtAuthLayer| {
        // An earlier layer (or a bug) puts an owner principal into the request.
        let smuggled = smuggled.clone();
        tower::util::MapRequestLayer::new(move |mut request: Request<Full<Bytes>>| {
            request.extensions_mut().insert(smuggled.clone());
            request
        })
        .layer(auth.layer(service_fn(echo)))
    };
    let call = |authorization: Option<&str>, auth: JwtAuthLayer| {
        let mut request = Request::builder();
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        service(auth).oneshot(request.body(Full::default()).expect("request"))
    };
    let response = call(None, JwtAuthLayer::new(tokens.clone()))
        .await
        .expect("infallible");
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "no token, however the extensions look"
    );
    let response = call(Some(&bearer), JwtAuthLayer::new(tokens.clone()))
        .await
        .expect("infallible");
    let body = body_text(response).await;
    assert_eq!(
        body,
        real.user_id().to_string(),
        "the handler sees the token's caller, never the smuggled one"
    );
    let response = call(None, JwtAuthLayer::optional(tokens))
        .await
        .expect("infallible");
    let body = body_text(response).await;
    assert_eq!(body, "anonymous", "optional mode drops it too");
}

async fn body_text(response: Response<Full<Bytes>>) -> String {
    String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec(),
    )
    .expect("utf8")
}
