//! The WebSocket handshake: the upgrade request checked (method, headers, version, Origin,
//! subprotocol), the caller authenticated (bearer or ticket, then the session check), the
//! connection admitted (caps), and the 101 answer; then the connection's task.

use std::convert::Infallible;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tenantkit_core::{ErrorCode, Principal, Problem};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::{Body, Realtime};
use crate::channel::BoxFuture;
use crate::hub::Full as Refusal;
use crate::protocol::SUBPROTOCOL;

impl Realtime {
    /// Answers one handshake request (what [`RealtimeService`] calls).
    pub async fn handshake<B>(&self, request: Request<B>) -> Response<Body> {
        // The body of an upgrade request is empty; only the head is kept across awaits.
        let (mut request, _) = request.into_parts();
        let inner = &self.inner;
        let answer = match self.admit(&request).await {
            Ok(answer) => answer,
            Err(response) => {
                inner
                    .hub
                    .stats
                    .refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return response;
            }
        };
        let Some(on_upgrade) = request.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
            return problem(
                ErrorCode::BadRequest,
                "this connection cannot be upgraded (HTTP/1.1 only)",
            );
        };
        let inner = self.inner.clone();
        let Answer {
            accept,
            protocol,
            admission,
            principal,
        } = answer;
        let config = inner.limits.websocket_config();
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            crate::connection::run(ws, inner, admission, principal).await;
        });
        let mut response = Response::new(Body::default());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if protocol {
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(SUBPROTOCOL),
            );
        }
        response
    }

    async fn admit(&self, request: &http::request::Parts) -> Result<Answer, Response<Body>> {
        let inner = &self.inner;
        let headers = &request.headers;
        let key = upgrade_key(&request.method, headers)?;
        check_origin(headers, &inner.origins)?;
        let protocol = negotiate(headers)?;
        let principal = self.authenticate(request).await?;
        let principal = match inner.live(principal).await {
            Ok(Some(principal)) => principal,
            Ok(None) => {
                return Err(tenantkit_auth::problem_response(
                    &tenantkit_auth::Error::InvalidToken("session revoked"),
                ));
            }
            Err(()) => return Err(problem(ErrorCode::ServiceUnavailable, "try again")),
        };
        let admission = inner
            .hub
            .admit(
                (
                    principal.tenant_id(),
                    principal.user_id(),
                    principal.session_id(),
                ),
                inner.limits.max_connections_per_tenant,
                inner.limits.max_connections,
                inner.limits.queue_bytes,
            )
            .map_err(|refusal| match refusal {
                Refusal::Tenant => problem(
                    ErrorCode::RateLimited,
                    "the tenant holds its share of realtime connections",
                ),
                Refusal::Server => problem(
                    ErrorCode::ServiceUnavailable,
                    "the server holds all the realtime connections it can",
                ),
                Refusal::ShuttingDown => {
                    problem(ErrorCode::ServiceUnavailable, "the server is shutting down")
                }
            })?;
        Ok(Answer {
            accept: derive_accept_key(key.as_bytes()),
            protocol,
            admission,
            principal,
        })
    }

    /// The caller: from `Authorization: Bearer`, or from a single-use `?ticket=`.
    async fn authenticate(
        &self,
        request: &http::request::Parts,
    ) -> Result<Principal, Response<Body>> {
        let auth_error = |err: tenantkit_auth::Error| tenantkit_auth::problem_response(&err);
        let query = request.uri.query().unwrap_or("");
        let mut ticket = None;
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*name {
                "ticket" if ticket.is_none() => ticket = Some(value.into_owned()),
                "ticket" => return Err(problem(ErrorCode::BadRequest, "one ticket per request")),
                "token" | "access_token" | "jwt" => {
                    return Err(problem(
                        ErrorCode::BadRequest,
                        "tokens are never accepted in a URL: send Authorization: Bearer, or use a ticket (POST /v1/realtime/ticket)",
                    ));
                }
                _ => {}
            }
        }
        if request.headers.contains_key(header::AUTHORIZATION) {
            let token = tenantkit_auth::bearer_token(&request.headers).map_err(auth_error)?;
            return self.inner.tokens.verify(token).map_err(auth_error);
        }
        let Some(ticket) = ticket else {
            return Err(auth_error(tenantkit_auth::Error::MissingToken));
        };
        #[cfg(any(feature = "sqlite", feature = "postgres"))]
        if let Some(tickets) = &self.inner.tickets {
            return match tickets.redeem(&ticket).await {
                Ok(Some(principal)) => {
                    if principal
                        .expires_at()
                        .is_some_and(|at| at <= self.inner.tokens.clock().now())
                    {
                        Err(auth_error(tenantkit_auth::Error::TokenExpired))
                    } else {
                        Ok(principal)
                    }
                }
                Ok(None) => Err(auth_error(tenantkit_auth::Error::InvalidToken(
                    "unknown, used or expired ticket",
                ))),
                Err(err) => {
                    tracing::warn!(error = %err, "realtime: redeeming a ticket failed");
                    Err(problem(ErrorCode::ServiceUnavailable, "try again"))
                }
            };
        }
        let _ = ticket;
        Err(auth_error(tenantkit_auth::Error::InvalidToken(
            "tickets are not enabled",
        )))
    }
}

struct Answer {
    accept: String,
    protocol: bool,
    admission: crate::hub::Admission,
    principal: Principal,
}

fn problem(code: ErrorCode, detail: &str) -> Response<Body> {
    Problem::new(code, detail).into_response()
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

/// The `Sec-WebSocket-Key` of a valid upgrade request.
fn upgrade_key(method: &Method, headers: &HeaderMap) -> Result<String, Response<Body>> {
    let not_upgrade = || {
        problem(
            ErrorCode::BadRequest,
            "not a WebSocket upgrade request (GET with Upgrade: websocket)",
        )
    };
    if method != Method::GET
        || !header_has(headers, header::CONNECTION, "upgrade")
        || !header_has(headers, header::UPGRADE, "websocket")
    {
        return Err(not_upgrade());
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut response = problem(ErrorCode::BadRequest, "WebSocket version 13 only");
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return Err(response);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|k| k.to_str().ok())
        .filter(|k| k.len() == 24)
        .ok_or_else(not_upgrade)?;
    Ok(key.to_owned())
}

/// A browser `Origin` must be on the allow-list; no `Origin` is a non-browser client.
fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), Response<Body>> {
    let mut origins = headers.get_all(header::ORIGIN).iter();
    let Some(origin) = origins.next() else {
        return Ok(());
    };
    let ok = origins.next().is_none()
        && origin.to_str().is_ok_and(|o| {
            allowed
                .iter()
                .any(|a| a.eq_ignore_ascii_case(o.trim_end_matches('/')))
        });
    if ok {
        Ok(())
    } else {
        Err(problem(
            ErrorCode::Forbidden,
            "this origin may not open realtime connections",
        ))
    }
}

/// Whether to answer with the subprotocol: a client that offers subprotocols must offer
/// `tenantkit.v1`.
fn negotiate(headers: &HeaderMap) -> Result<bool, Response<Body>> {
    if !headers.contains_key(header::SEC_WEBSOCKET_PROTOCOL) {
        return Ok(false);
    }
    if header_has(headers, header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL) {
        Ok(true)
    } else {
        Err(problem(
            ErrorCode::BadRequest,
            "unsupported subprotocol: this server speaks tenantkit.v1",
        ))
    }
}

/// The tower service of [`Realtime::handshake`]: mount it at `GET /v1/realtime` (axum:
/// `route_service`; hyper: call it from the service function). The connection must be served
/// with upgrades enabled (hyper's `serve_connection(..).with_upgrades()`; axum's `serve`
/// does this).
#[derive(Debug, Clone)]
pub struct RealtimeService {
    pub(super) realtime: Realtime,
}

impl<B: Send + 'static> tower::Service<Request<B>> for RealtimeService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let realtime = self.realtime.clone();
        Box::pin(async move { Ok(realtime.handshake(request).await) })
    }
}
