//! The auth flows as mountable axum routes (features `axum` and a database backend): signup,
//! login, refresh, logout and logout-all, answering exactly what the reference server's
//! `/v1/auth/*` answers.
//!
//! | Route | Body | Answer |
//! |---|---|---|
//! | `POST /signup` | [`SignupRequest`] | 201 [`SignedUp`]; 202 [`CheckEmail`] ([`SignupMode::VerifyFirst`]) |
//! | `POST /login` | [`LoginRequest`] | 200 [`LoggedIn`]; 401 `mfa_required` with an `mfa_token` (a second factor is on); 403 `mfa_enrollment_required` with one (the tenant requires a second factor the account lacks) |
//! | `POST /mfa/verify` | [`MfaVerify`] | 200 [`LoggedIn`] (`amr` gains `otp`) |
//! | `POST /mfa/enroll` | [`PendingEnrollment`] (the token of a 403 `mfa_enrollment_required`) | 201 [`TotpEnrollment`] (shown once) |
//! | `POST /mfa/enroll/confirm` | [`PendingConfirmation`] | 200 [`EnrolledSignIn`] (recovery codes and the login answer; `amr` gains `otp`) |
//! | `POST /mfa/totp` | none; a bearer access token | 201 [`TotpEnrollment`] (shown once) |
//! | `POST /mfa/totp/confirm` | [`TotpCode`]; a bearer access token | 200 [`RecoveryCodes`] (shown once) |
//! | `DELETE /mfa/totp` | [`SecondFactor`]; a bearer access token | 204 |
//! | `POST /refresh` | [`RefreshRequest`] | 200 [`TokenPair`] (the presented token is spent) |
//! | `POST /logout` | [`RefreshRequest`] | 204 (whatever the token's session was) |
//! | `POST /logout-all` | none; a bearer access token | 204: every session of the caller ends |
//!
//! Every answer carrying a token (and the 202) has `Cache-Control: no-store` (RFC 6749 §5.1).
//! Errors are `application/problem+json` with a stable `code`: the body's (400 `bad_request`,
//! 415, 422 `validation_failed` naming the field, from [`ApiJson`]) and the flows' (401, 409,
//! 429 with `Retry-After`, ...; [`Error`]'s `IntoResponse`).
//!
//! **The client.** Each flow's rate limits key on the caller's address, the
//! [`ClientInfo`] extractor's: the TCP peer from axum's `ConnectInfo<SocketAddr>`, or behind one
//! of the [`TrustedProxies`] given with [`AuthRoutes::with_trusted_proxies`] (none by default)
//! the address its forwarding header names. Serve the app with
//! `into_make_service_with_connect_info::<SocketAddr>()`: a request without `ConnectInfo` is
//! refused with a 500 problem (and an error in the log), never counted in one bucket shared by
//! every caller.
//!
//! **Logout-all needs a caller.** The route verifies the bearer token itself, so it can never
//! be mounted unprotected: [`JwtAuthLayer`] over the flows' [`AccessTokens`](crate::AccessTokens)
//! by default (401 `unauthenticated` without a token), or the layer given with
//! [`AuthRoutes::with_auth_layer`] (a [`StrictJwtAuthLayer`](crate::StrictJwtAuthLayer) that also
//! refuses a revoked session, for one). A layer the app puts in front of these routes as well
//! is harmless, but not needed; signup, login, refresh and logout need none.
//!
//! The routes carry their own state: [`AuthRoutes::router`] is a `Router<S>` for any app state
//! `S`, to `merge` or `nest`; each route is also available alone ([`AuthRoutes::signup`], ...)
//! as a `MethodRouter<S>`, to mount under other paths or beside an OpenAPI entry.
//!
//! ```
//! use std::net::SocketAddr;
//! use std::sync::Arc;
//!
//! use axum::Router;
//! use tenantkit_auth::flows::AuthFlows;
//! use tenantkit_auth::routes::AuthRoutes;
//! use tenantkit_core::TrustedProxies;
//!
//! fn app(flows: AuthFlows) -> Router {
//!     let auth = AuthRoutes::new(flows)
//!         .with_trusted_proxies(Arc::new(TrustedProxies::default())); // the default: none
//!     Router::new().nest("/auth", auth.router())
//!     // ... the app's own routes; serve with
//!     // `app.into_make_service_with_connect_info::<SocketAddr>()`
//! }
//! # let _ = app;
//! # let _: Option<SocketAddr> = None;
//! ```

use std::fmt;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, Route, post};
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use tenantkit_core::axum::ApiJson;
use tenantkit_core::{ClientInfo, Principal, TrustedProxies};
use tower::{Layer, Service};

use crate::flows::{
    AuthFlows, LoginRequest, MfaVerify, PendingConfirmation, PendingEnrollment, SecondFactor,
    SignIn, SignupOutcome, SignupRequest, TotpCode,
};
#[cfg(doc)]
use crate::flows::{
    EnrolledSignIn, LoggedIn, RecoveryCodes, SignedUp, SignupMode, TokenPair, TotpEnrollment,
};
use crate::{Error, JwtAuthLayer, RefreshToken};

/// Answers carrying tokens are never cached (RFC 6749 §5.1).
const NO_STORE: [(HeaderName, &str); 1] = [(header::CACHE_CONTROL, "no-store")];

/// The body of `POST /refresh` and `POST /logout`: `{"refresh_token": "..."}` (nothing else).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefreshRequest {
    /// The refresh token the session was last given.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Password))]
    pub refresh_token: RefreshToken,
}

/// `{"status": "check_your_email"}`: a verify-first signup's one answer (202), the same for a
/// new and a registered address.
#[derive(Debug, Clone, Copy, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckEmail {
    /// Always `check_your_email`.
    pub status: &'static str,
}

impl Default for CheckEmail {
    fn default() -> Self {
        CheckEmail {
            status: "check_your_email",
        }
    }
}

/// The most bytes of a request body the auth routes read unless
/// [`AuthRoutes::with_body_limit`] says otherwise: their bodies are an email, a password (at
/// most a few hundred bytes) and names; a larger one answers 413 `payload_too_large` before
/// any of it is parsed, whatever limit the app sets for its other routes.
pub const AUTH_BODY_LIMIT: usize = 16 * 1024;

/// The routes' own state.
#[derive(Debug, Clone)]
struct RouteState {
    flows: AuthFlows,
    proxies: Arc<TrustedProxies>,
    body_limit: usize,
}

impl FromRef<RouteState> for Arc<TrustedProxies> {
    fn from_ref(state: &RouteState) -> Arc<TrustedProxies> {
        state.proxies.clone()
    }
}

/// Puts the authentication layer on logout-all.
type Guard = Arc<dyn Fn(MethodRouter<RouteState>) -> MethodRouter<RouteState> + Send + Sync>;

/// The auth flows' routes over one [`AuthFlows`]; see the [module documentation](self). Cheap
/// to clone.
#[derive(Clone)]
pub struct AuthRoutes {
    state: RouteState,
    guard: Guard,
}

impl fmt::Debug for AuthRoutes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthRoutes")
            .field("flows", &self.state.flows)
            .field("proxies", &self.state.proxies)
            .finish_non_exhaustive()
    }
}

impl AuthRoutes {
    /// The routes over `flows`, trusting no proxy, with logout-all behind a [`JwtAuthLayer`]
    /// over the flows' access tokens.
    pub fn new(flows: AuthFlows) -> Self {
        let layer = JwtAuthLayer::new(flows.tokens().clone());
        AuthRoutes {
            state: RouteState {
                flows,
                proxies: Arc::new(TrustedProxies::default()),
                body_limit: AUTH_BODY_LIMIT,
            },
            guard: Arc::new(move |route| route.route_layer(layer.clone())),
        }
    }

    /// Believes the forwarding header of `proxies` (only the one they are configured with) for
    /// the client's address, the key of the rate limits. Give the app's own, so the auth routes
    /// see the client as its other routes do.
    pub fn with_trusted_proxies(mut self, proxies: Arc<TrustedProxies>) -> Self {
        self.state.proxies = proxies;
        self
    }

    /// Reads at most `bytes` of a request body (default [`AUTH_BODY_LIMIT`]); the limit is the
    /// routes' own, set on each of them, so an app-wide `DefaultBodyLimit` does not widen it.
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.state.body_limit = bytes;
        self
    }

    /// The route `method` over the routes' state and body limit.
    fn finish<S>(&self, method: MethodRouter<RouteState>) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        method
            .layer(DefaultBodyLimit::max(self.state.body_limit))
            .with_state(self.state.clone())
    }

    /// Verifies logout-all's caller with `layer` instead of the default [`JwtAuthLayer`]: any
    /// layer that puts the verified [`Principal`] in the request extensions or answers itself
    /// (a [`StrictJwtAuthLayer`](crate::StrictJwtAuthLayer), to refuse a revoked session's
    /// still-unexpired token as the app's other protected routes do).
    pub fn with_auth_layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<Route> + Clone + Send + Sync + 'static,
        L::Service: Service<Request, Error = Infallible> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request>>::Response: IntoResponse + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        self.guard = Arc::new(move |route| route.route_layer(layer.clone()));
        self
    }

    /// Every route: `POST /signup`, `/login`, `/refresh`, `/logout` and `/logout-all`, for any
    /// app state `S` (the routes carry their own).
    pub fn router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        Router::new()
            .route("/signup", self.signup())
            .route("/login", self.login())
            .route("/refresh", self.refresh())
            .route("/logout", self.logout())
            .route("/logout-all", self.logout_all())
            .route("/mfa/verify", self.mfa_verify())
            .route("/mfa/enroll", self.mfa_enroll())
            .route("/mfa/enroll/confirm", self.mfa_enroll_confirm())
            .route("/mfa/totp", self.mfa_totp())
            .route("/mfa/totp/confirm", self.mfa_totp_confirm())
    }

    /// `POST` mfa/verify alone: the second step of a sign-in (200 with the tokens).
    pub fn mfa_verify<S>(&self) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        self.finish(post(mfa_verify))
    }

    /// `POST` mfa/enroll alone: with the token of a `mfa_enrollment_required` answer, a new
    /// seed for its account (201, shown once). No bearer token: the account has no session.
    pub fn mfa_enroll<S>(&self) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        self.finish(post(mfa_enroll))
    }

    /// `POST` mfa/enroll/confirm alone: the token and a first code turn the second factor on
    /// and sign in (200 with the recovery codes beside the tokens).
    pub fn mfa_enroll_confirm<S>(&self) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        self.finish(post(mfa_enroll_confirm))
    }

    /// `POST` (enroll: 201 with the seed) and `DELETE` (disable, with a current code: 204)
    /// mfa/totp, behind the authentication layer.
    pub fn mfa_totp<S>(&self) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        self.finish((self.guard)(post(totp_enroll).delete(totp_disable)))
    }

    /// `POST` mfa/totp/confirm alone, behind the authentication layer: 200 with the recovery
    /// codes.
    pub fn mfa_totp_confirm<S>(&self) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        self.finish((self.guard)(post(totp_confirm)))
    }

    /// `POST` signup alone: 201 with the new tenant, its owner and their tokens, or 202
    /// [`CheckEmail`] when the flows sign up verify-first.
    pub fn signup<S>(&self) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        self.finish(post(signup))
    }

    /// `POST` login alone: 200 with the user, the tenant and the tokens.
    pub fn login<S>(&self) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        self.finish(post(login))
    }

    /// `POST` refresh alone: 200 with a new token pair; the presented refresh token is spent.
    pub fn refresh<S>(&self) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        self.finish(post(refresh))
    }

    /// `POST` logout alone: 204, ending the refresh token's session.
    pub fn logout<S>(&self) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        self.finish(post(logout))
    }

    /// `POST` logout-all alone, behind its authentication layer: 204, ending every session of
    /// the caller.
    pub fn logout_all<S>(&self) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        self.finish((self.guard)(post(logout_all)))
    }
}

async fn signup(
    State(state): State<RouteState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<SignupRequest>,
) -> Result<Response, Error> {
    Ok(match state.flows.signup(&client, body).await? {
        SignupOutcome::SignedIn(done) => {
            (StatusCode::CREATED, NO_STORE, Json(*done)).into_response()
        }
        // The same answer for a new and a registered address.
        SignupOutcome::CheckEmail => {
            (StatusCode::ACCEPTED, NO_STORE, Json(CheckEmail::default())).into_response()
        }
    })
}

async fn login(
    State(state): State<RouteState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, Error> {
    Ok(sign_in_response(state.flows.login(&client, body).await?))
}

/// The HTTP answer to a sign-in's outcome, as `POST /login` gives it: 200 with the flow's
/// answer; 401 `mfa_required` or 403 `mfa_enrollment_required` with the `mfa_token` that
/// continues it. Every one with `Cache-Control: no-store`. For handlers of one's own that end
/// with a sign-in (accepting an invitation, say).
pub fn sign_in_response<T: Serialize>(outcome: SignIn<T>) -> Response {
    match outcome {
        SignIn::Complete(done) => (NO_STORE, Json(done)).into_response(),
        SignIn::MfaRequired { mfa_token } => {
            (NO_STORE, crate::mfa_required_problem(mfa_token)).into_response()
        }
        SignIn::MfaEnrollmentRequired { mfa_token } => {
            (NO_STORE, crate::mfa_enrollment_required_problem(mfa_token)).into_response()
        }
    }
}

async fn mfa_verify(
    State(state): State<RouteState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<MfaVerify>,
) -> Result<impl IntoResponse, Error> {
    Ok((
        NO_STORE,
        Json(state.flows.mfa_verify(&client, &body).await?),
    ))
}

async fn mfa_enroll(
    State(state): State<RouteState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<PendingEnrollment>,
) -> Result<impl IntoResponse, Error> {
    let enrollment = state.flows.mfa_enroll_pending(&client, &body).await?;
    Ok((StatusCode::CREATED, NO_STORE, Json(enrollment)))
}

async fn mfa_enroll_confirm(
    State(state): State<RouteState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<PendingConfirmation>,
) -> Result<impl IntoResponse, Error> {
    Ok((
        NO_STORE,
        Json(state.flows.mfa_confirm_pending(&client, &body).await?),
    ))
}

async fn totp_enroll(
    State(state): State<RouteState>,
    caller: Principal,
) -> Result<impl IntoResponse, Error> {
    let enrollment = state.flows.totp_enroll(&caller).await?;
    Ok((StatusCode::CREATED, NO_STORE, Json(enrollment)))
}

async fn totp_confirm(
    State(state): State<RouteState>,
    client: ClientInfo,
    caller: Principal,
    ApiJson(body): ApiJson<TotpCode>,
) -> Result<impl IntoResponse, Error> {
    let codes = state.flows.totp_confirm(&client, &caller, &body).await?;
    Ok((NO_STORE, Json(codes)))
}

async fn totp_disable(
    State(state): State<RouteState>,
    client: ClientInfo,
    caller: Principal,
    ApiJson(body): ApiJson<SecondFactor>,
) -> Result<StatusCode, Error> {
    state.flows.totp_disable(&client, &caller, &body).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn refresh(
    State(state): State<RouteState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<impl IntoResponse, Error> {
    let tokens = state.flows.refresh(&client, &body.refresh_token).await?;
    Ok((NO_STORE, Json(tokens)))
}

async fn logout(
    State(state): State<RouteState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<StatusCode, Error> {
    state.flows.logout(&client, &body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn logout_all(
    State(state): State<RouteState>,
    client: ClientInfo,
    caller: Principal,
) -> Result<StatusCode, Error> {
    state.flows.logout_all(&client, &caller).await?;
    Ok(StatusCode::NO_CONTENT)
}
