//! [`Realtime`]: the broadcaster's handle, and [`RealtimeService`], the tower service that
//! performs the WebSocket handshake.

mod handshake;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use serde::Serialize;
use tenantkit_auth::{AccessTokens, CachedSessionCheck, Revocations, SessionState};
use tenantkit_core::{Principal, TenantId};
use tokio::sync::broadcast::error::RecvError;

pub use handshake::RealtimeService;

use crate::backplane::{Backplane, MemoryBackplane, Publish};
use crate::channel::{ChannelKey, Channels};
use crate::hub::{Hub, RealtimeStats};
use crate::protocol::close;
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
    _tasks: crate::tasks::Tasks,
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
        if let Some(mut gaps) = backplane.gaps() {
            let hub = hub.clone();
            tasks.push(tokio::spawn(async move {
                while gaps.changed().await.is_ok() {
                    tracing::warn!("realtime: the backplane reported a gap; closing connections");
                    hub.stats
                        .lagged
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    hub.close_all(close::TRY_AGAIN);
                }
            }));
        }
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
                _tasks: crate::tasks::Tasks::new(tasks),
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
}
