//! Who is calling: the client's address behind trusted reverse proxies.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ::axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use http::request::Parts;

use crate::{Problem, TrustedProxies};

/// The client's IP address: the TCP peer, or behind a trusted reverse proxy the address its
/// forwarding header names (only the header the [`TrustedProxies`] are configured with, so a
/// client's own `Forwarded` behind an `X-Forwarded-For` proxy names nobody).
///
/// The peer comes from axum's `ConnectInfo<SocketAddr>` in the request extensions, which the
/// server inserts for every connection (`Router::into_make_service_with_connect_info`, or a
/// `map_request` in a hand-written accept loop). Nothing a client sends can put it there. A
/// request without it is a wiring bug, not an anonymous client: it answers 500 and logs an
/// error, rather than sharing one rate-limit bucket (and one audit address) among everyone.
///
/// The proxies come from the state: `Arc<TrustedProxies>: FromRef<S>` (an
/// `Arc::new(TrustedProxies::default())` trusts none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// The client behind `proxies` for a request whose parts are `parts`; a 500 problem when
    /// the request carries no `ConnectInfo<SocketAddr>`.
    ///
    /// # Errors
    /// [`Problem::internal`] without connection info (logged as an error).
    pub fn from_parts(parts: &Parts, proxies: &TrustedProxies) -> Result<Self, Problem> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            tracing::error!(
                path = %parts.uri.path(),
                "request without ConnectInfo<SocketAddr>: serve the router with \
                 `into_make_service_with_connect_info::<SocketAddr>()` (or insert \
                 `ConnectInfo` per connection); refusing rather than sharing one client \
                 address among every caller"
            );
            return Err(Problem::internal());
        };
        Ok(ClientIp(proxies.client(peer.ip(), &parts.headers)))
    }
}

impl<S> FromRequestParts<S> for ClientIp
where
    S: Send + Sync,
    Arc<TrustedProxies>: FromRef<S>,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let proxies = Arc::<TrustedProxies>::from_ref(state);
        ClientIp::from_parts(parts, &proxies)
    }
}

/// The client's address ([`ClientIp`]: same source, same refusal without `ConnectInfo`) and
/// its `User-Agent` (when it is text), for rate limits and the audit log.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl<S> FromRequestParts<S> for crate::ClientInfo
where
    S: Send + Sync,
    Arc<TrustedProxies>: FromRef<S>,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
        let user_agent = parts
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(crate::ClientInfo { ip, user_agent })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::axum::test_support::send;
    use ::axum::Router;
    use ::axum::body::Body;
    use ::axum::routing::get;
    use http::{Request, StatusCode};

    fn router(proxies: TrustedProxies) -> Router {
        Router::new()
            .route(
                "/ip",
                get(|ClientIp(ip): ClientIp| async move { ip.to_string() }),
            )
            .with_state(Arc::new(proxies))
    }

    fn request(peer: Option<&str>, headers: &[(&str, &str)]) -> Request<Body> {
        let mut builder = Request::get("/ip");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut request = builder.body(Body::empty()).expect("request");
        if let Some(peer) = peer {
            let peer: SocketAddr = peer.parse().expect("peer");
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        request
    }

    async fn text(router: Router, request: Request<Body>) -> (StatusCode, String) {
        let response = tower::ServiceExt::oneshot(router, request)
            .await
            .expect("infallible");
        let status = response.status();
        let bytes = ::axum::body::to_bytes(response.into_body(), 4096)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn the_peer_is_the_client_without_trusted_proxies_whatever_the_headers_say() {
        let (status, ip) = text(
            router(TrustedProxies::default()),
            request(
                Some("203.0.113.7:5000"),
                &[
                    ("x-forwarded-for", "198.51.100.1"),
                    ("forwarded", "for=1.2.3.4"),
                ],
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ip, "203.0.113.7");
    }

    #[tokio::test]
    async fn behind_a_trusted_proxy_only_the_configured_header_names_the_client() {
        let proxies: TrustedProxies = "10.0.0.0/8".parse().expect("proxies");
        let (_, ip) = text(
            router(proxies.clone()),
            request(
                Some("10.1.2.3:443"),
                &[
                    ("x-forwarded-for", "198.51.100.1"),
                    ("forwarded", "for=1.2.3.4"),
                ],
            ),
        )
        .await;
        assert_eq!(ip, "198.51.100.1");
        let forwarded = proxies.with_header(crate::ForwardedHeader::Forwarded);
        let (_, ip) = text(
            router(forwarded),
            request(
                Some("10.1.2.3:443"),
                &[
                    ("x-forwarded-for", "198.51.100.1"),
                    ("forwarded", "for=1.2.3.4"),
                ],
            ),
        )
        .await;
        assert_eq!(ip, "1.2.3.4");
    }

    /// A request the server did not give connection info to is refused (500 problem) instead
    /// of being counted as the unspecified address, one bucket shared by every such caller.
    #[tokio::test]
    async fn a_missing_connect_info_is_a_500_problem_not_a_shared_address() {
        let (response, body) = send(
            router(TrustedProxies::default()),
            request(None, &[("x-forwarded-for", "198.51.100.1")]),
        )
        .await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["code"], "internal_error");
        assert_eq!(
            response.headers()[http::header::CONTENT_TYPE],
            crate::PROBLEM_JSON
        );
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    #[tokio::test]
    async fn client_info_carries_the_address_and_a_textual_user_agent() {
        let router = Router::new()
            .route(
                "/who",
                get(|client: crate::ClientInfo| async move {
                    format!("{} {:?}", client.ip, client.user_agent)
                }),
            )
            .with_state(Arc::new(TrustedProxies::default()));
        let mut request = Request::get("/who")
            .header("user-agent", "probe/1")
            .body(Body::empty())
            .expect("request");
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 1], 1))));
        let (status, text) = text(router.clone(), request).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(text, r#"192.0.2.1 Some("probe/1")"#);
        let (status, _) = text_of(router).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    async fn text_of(router: Router) -> (StatusCode, String) {
        text(
            router,
            Request::get("/who").body(Body::empty()).expect("request"),
        )
        .await
    }
}
