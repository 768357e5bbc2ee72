//! tenantkit-auth and tenantkit-realtime on plain hyper: the same `JwtAuthLayer`,
//! `RequireLayer` and `RealtimeService` the reference server uses, with no web framework at
//! all.
//!
//! - `GET /hello` needs any valid access token and greets the verified caller;
//! - `GET /admin` also needs the `manage_members` permission (admins and owners);
//! - `GET /v1/realtime` is the WebSocket broadcaster (protocol v1, bearer token), to which
//!   the application publishes with [`Realtime::publish`].
//!
//! The layers need an [`AccessTokens`] and nothing else: no refresh secret, no session store,
//! no database. Over a verify-only key set ([`tenantkit_auth::KeySet::from_jwks`], or
//! [`tenantkit_auth::VerifyingKey::from_public_pem`] keys) the server verifies another
//! service's tokens holding its public keys only.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tenantkit_auth::{AccessTokens, JwtAuthLayer, RequireLayer};
use tenantkit_core::{ErrorCode, Permission, Principal, Problem};
use tenantkit_realtime::Realtime;
use tokio::net::TcpListener;
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt as _};

/// The response body of this example.
pub type Body = Full<Bytes>;

type Handler = BoxCloneService<Request<hyper::body::Incoming>, Response<Body>, Infallible>;

/// The whole application as one tower service: routing plus the auth layers per route, and
/// the broadcaster's own service (it authenticates the handshake itself).
pub fn app(tokens: &AccessTokens, realtime: &Realtime) -> Handler {
    let websocket = realtime.service();
    let hello = ServiceBuilder::new()
        .layer(JwtAuthLayer::new(tokens.clone()))
        .service_fn(hello);
    let admin = ServiceBuilder::new()
        .layer(JwtAuthLayer::new(tokens.clone()))
        .layer(RequireLayer::permission(Permission::ManageMembers))
        .service_fn(admin);
    let router = tower::service_fn(move |request: Request<hyper::body::Incoming>| {
        let (hello, admin, websocket) = (hello.clone(), admin.clone(), websocket.clone());
        let route: Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>> =
            match request.uri().path() {
                "/hello" => Box::pin(hello.oneshot(request)),
                "/admin" => Box::pin(admin.oneshot(request)),
                "/v1/realtime" => Box::pin(websocket.oneshot(request)),
                _ => Box::pin(async {
                    Ok(Problem::new(ErrorCode::NotFound, "No such route.").into_response())
                }),
            };
        route
    });
    BoxCloneService::new(router)
}

async fn hello<B>(request: Request<B>) -> Result<Response<Body>, Infallible> {
    Ok(text(request.extensions().get::<Principal>().map_or_else(
        || "nobody".to_owned(),
        |who| {
            format!(
                "hello {} ({}) of tenant {}",
                who.user_id(),
                who.role(),
                who.tenant_id()
            )
        },
    )))
}

async fn admin<B>(_request: Request<B>) -> Result<Response<Body>, Infallible> {
    Ok(text("welcome to the admin area".to_owned()))
}

fn text(body: String) -> Response<Body> {
    let mut response = Response::new(Full::from(body));
    *response.status_mut() = StatusCode::OK;
    response
}

/// Accepts HTTP/1 connections on `listener` forever, each served by [`app`] (with upgrades,
/// for the WebSocket).
///
/// # Errors
/// When accepting a connection fails.
pub async fn serve(
    listener: TcpListener,
    tokens: AccessTokens,
    realtime: Realtime,
) -> std::io::Result<()> {
    let service = app(&tokens, &realtime);
    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}
