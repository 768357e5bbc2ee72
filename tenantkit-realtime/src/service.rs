//! [`Realtime`]: the broadcaster's handle, and [`RealtimeService`], the tower service that
//! performs the WebSocket handshake.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::value::RawValue;
use tenantkit_auth::{AccessTokens, CachedSessionCheck, Revocations, SessionState};
use tenantkit_core::{ErrorCode, Principal, Problem, TenantId};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::backplane::{Backplane, MemoryBackplane, Publish};
use crate::channel::{BoxFuture, ChannelKey, Channels};
use crate::hub::{Full as Refusal, Hub, RealtimeStats};
use crate::protocol::{SUBPROTOCOL, close};
use crate::{Error, Limits, Result};

/// The response body of the handshake (empty on success, problem+json on refusal).
pub type Body = Full<Bytes>;

pub(crate) struct Inner {
    pub(crate) hub: Arc<Hub>,
    pub(crate) backplane: Arc<dyn Backplane>,
    pub(crate) channels: Channels,
    pub(crate) tokens: AccessTokens,
    pub(crate) session_check: Option<CachedSessionCheck>,
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) tickets: Option<crate::Tickets>,
    pub(crate) origins: Vec<String>,
    pub(crate) limits: Limits,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Realtime")
            .field("backplane", &self.backplane)
            .field("channels", &self.channels)
            .field("origins", &self.origins)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Inner {
    /// `principal` with its current role if its session is live (`None`: revoked); without a
    /// session check, as it is.
    pub(crate) async fn live(&self, principal: Principal) -> Result<Option<Principal>, ()> {
        let Some(check) = &self.session_check else {
            return Ok(Some(principal));
        };
        match check.check(&principal).await {
            Ok(SessionState::Live { role: Some(role) }) => Ok(Some(principal.with_role(role))),
            Ok(SessionState::Live { role: None }) => Ok(Some(principal)),
            Ok(SessionState::Over) => Ok(None),
            Err(err) => {
                tracing::warn!(error = %err, "realtime: the session check failed");
                Err(())
            }
        }
    }
}

/// The realtime broadcaster: channels, backplane, limits and the connections of this
/// instance. Cheap to clone. Build it with [`Realtime::builder`]; mount
/// [`Realtime::service`] at `GET /v1/realtime`.
///
/// ```no_run
/// # async fn example(tokens: tenantkit_auth::AccessTokens, revocations: tenantkit_auth::Revocations) {
/// use tenantkit_realtime::{Channels, Realtime};
///
/// let realtime = Realtime::builder(tokens)
///     .channels(Channels::new().kind("project", |_principal, _id| async { Ok(true) }))
///     .revocations(&revocations)
///     .origins(["https://app.example.com"])
///     .build();
/// // axum: Router::new().route_service("/v1/realtime", realtime.service())
/// # }
/// ```
#[derive(Clone)]
pub struct Realtime {
    inner: Arc<Inner>,
}

impl fmt::Debug for Realtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// Builds a [`Realtime`].
#[must_use]
pub struct RealtimeBuilder {
    tokens: AccessTokens,
    backplane: Option<Arc<dyn Backplane>>,
    channels: Channels,
    session_check: Option<CachedSessionCheck>,
    revocations: Option<Revocations>,
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    tickets: Option<crate::Tickets>,
    origins: Vec<String>,
    limits: Limits,
}

impl fmt::Debug for RealtimeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RealtimeBuilder").finish_non_exhaustive()
    }
}

impl RealtimeBuilder {
    /// The backplane (default: a new [`MemoryBackplane`]).
    pub fn backplane(mut self, backplane: Arc<dyn Backplane>) -> Self {
        self.backplane = Some(backplane);
        self
    }

    /// The channel kinds beyond `tenant`.
    pub fn channels(mut self, channels: Channels) -> Self {
        self.channels = channels;
        self
    }

    /// Checks the session at the handshake and on `{"type":"auth"}` (strict verification), so
    /// a revoked session cannot connect with a still-valid access token.
    pub fn session_check(mut self, check: CachedSessionCheck) -> Self {
        self.session_check = Some(check);
        self
    }

    /// Closes (4002) the sockets of every session a revocation on this bus ends: logout,
    /// password change, removal ... (tenantkit-auth's one revocation path).
    pub fn revocations(mut self, revocations: &Revocations) -> Self {
        self.revocations = Some(revocations.clone());
        self
    }

    /// Accepts `?ticket=` from this store.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub fn tickets(mut self, tickets: crate::Tickets) -> Self {
        self.tickets = Some(tickets);
        self
    }

    /// The browser origins allowed to connect (`https://app.example.com`; the CORS origins).
    /// A request with another `Origin` is refused with 403; one without `Origin` (not a
    /// browser) is allowed with a token.
    pub fn origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.origins = origins
            .into_iter()
            .map(|o| o.as_ref().trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|o| !o.is_empty())
            .collect();
        self
    }

    /// The limits (default [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The broadcaster; starts its background tasks (delivery from the backplane, the
    /// revocation listener), so it needs a tokio runtime.
    pub fn build(self) -> Realtime {
        let hub = Arc::new(Hub::default());
        let backplane = self
            .backplane
            .unwrap_or_else(|| Arc::new(MemoryBackplane::default()));
        let mut tasks = Vec::new();
        let mut events = backplane.events();
        let delivery = hub.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => delivery.deliver(&event),
                    Err(RecvError::Lagged(missed)) => {
                        // Events were lost for this instance's clients: they resume with since.
                        tracing::warn!(
                            missed,
                            "realtime: fell behind the backplane; closing connections"
                        );
                        delivery
                            .stats
                            .lagged
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        delivery.close_all(close::TRY_AGAIN);
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        }));
        if let Some(revocations) = self.revocations {
            let mut heard = revocations.subscribe();
            let hub = hub.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    match heard.recv().await {
                        Ok(revocation) => hub.revoke(&revocation),
                        Err(RecvError::Lagged(_)) => {
                            // Which sessions ended is unknown: every client reconnects, and
                            // the handshake checks its session again.
                            tracing::warn!("realtime: missed revocations; closing connections");
                            hub.close_all(close::TRY_AGAIN);
                        }
                        Err(RecvError::Closed) => break,
                    }
                }
            }));
        }
        Realtime {
            inner: Arc::new(Inner {
                hub,
                backplane,
                channels: self.channels,
                tokens: self.tokens,
                session_check: self.session_check,
                #[cfg(any(feature = "sqlite", feature = "postgres"))]
                tickets: self.tickets,
                origins: self.origins,
                limits: self.limits,
                tasks,
            }),
        }
    }
}

/// Longest event name, in bytes.
pub const MAX_EVENT_NAME_LEN: usize = 64;

fn check_event_name(event: &str) -> Result<()> {
    let ok = !event.is_empty()
        && event.len() <= MAX_EVENT_NAME_LEN
        && event
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidEvent(format!(
            "an event name is 1 to {MAX_EVENT_NAME_LEN} letters, digits and . _ - :"
        )))
    }
}

impl Realtime {
    /// A builder verifying access tokens with `tokens`.
    pub fn builder(tokens: AccessTokens) -> RealtimeBuilder {
        RealtimeBuilder {
            tokens,
            backplane: None,
            channels: Channels::new(),
            session_check: None,
            revocations: None,
            #[cfg(any(feature = "sqlite", feature = "postgres"))]
            tickets: None,
            origins: Vec::new(),
            limits: Limits::default(),
        }
    }

    /// The tower service answering WebSocket handshakes.
    pub fn service(&self) -> RealtimeService {
        RealtimeService {
            realtime: self.clone(),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The backplane.
    pub fn backplane(&self) -> &Arc<dyn Backplane> {
        &self.inner.backplane
    }

    /// The ticket store, if one was configured.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub fn tickets(&self) -> Option<&crate::Tickets> {
        self.inner.tickets.as_ref()
    }

    /// The counters.
    pub fn stats(&self) -> RealtimeStats {
        self.inner.hub.snapshot()
    }

    /// Publishes `data` as `event` on `channel` of `tenant` now, outside any transaction: its
    /// sequence number. For changes made in a transaction use [`crate::publish_in`], which
    /// publishes only after the commit and survives a crash.
    ///
    /// # Errors
    /// [`Error::InvalidChannel`], [`Error::InvalidEvent`], [`Error::EventTooLarge`], the
    /// backplane's errors.
    pub async fn publish(
        &self,
        tenant: TenantId,
        channel: &str,
        event: &str,
        data: &(impl Serialize + ?Sized),
    ) -> Result<u64> {
        let data = serde_json::value::to_raw_value(data)
            .map_err(|e| Error::InvalidEvent(format!("data does not serialise: {e}")))?;
        self.publish_message(Publish {
            channel: ChannelKey::new(tenant, channel)?,
            event: event.to_owned(),
            data,
            access_changed: false,
            origin: None,
        })
        .await
    }

    /// Publishes a prepared message (the relay's path).
    ///
    /// # Errors
    /// As [`Realtime::publish`].
    pub async fn publish_message(&self, message: Publish) -> Result<u64> {
        check_event_name(&message.event)?;
        // The frame adds the envelope to the data and names; bound the whole.
        let size = message.data.get().len() + message.event.len() + message.channel.name.len() + 64;
        if size > self.inner.limits.max_event_bytes {
            return Err(Error::EventTooLarge(size));
        }
        self.inner.backplane.publish(message).await
    }

    /// Refuses new connections and closes the open ones with 1001 (going away); call it when
    /// the server starts shutting down, so clients reconnect to another instance.
    pub fn shut_down(&self) {
        self.inner.hub.shut_down();
    }

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
                        .is_some_and(|at| at <= tenantkit_core::now())
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
    realtime: Realtime,
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

/// The data of an outbox message the relay publishes (topic [`crate::OUTBOX_TOPIC`]).
#[derive(Debug, serde::Deserialize, Serialize)]
pub(crate) struct OutboxEvent {
    pub(crate) channel: String,
    pub(crate) event: String,
    pub(crate) data: Box<RawValue>,
    #[serde(default)]
    pub(crate) access_changed: bool,
}
