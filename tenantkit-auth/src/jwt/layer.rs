//! `JwtAuthLayer`: verifies `Authorization: Bearer` and puts the `Principal` in the request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, header};
use tower::{Layer, Service};

use super::{AccessTokens, CachedSessionCheck, SessionState};
use crate::future::ResponseFuture;
use crate::{Error, Result, problem_response};

/// Authenticates requests with a bearer access token.
///
/// On success the verified [`tenantkit_core::Principal`] is inserted into the request
/// extensions; on failure the request never reaches the inner service and is answered
/// `401` with `WWW-Authenticate: Bearer …` and an `application/problem+json` body.
#[derive(Debug, Clone)]
pub struct JwtAuthLayer {
    tokens: AccessTokens,
    optional: bool,
}

impl JwtAuthLayer {
    /// Every request must carry a valid token.
    pub fn new(tokens: AccessTokens) -> Self {
        Self {
            tokens,
            optional: false,
        }
    }

    /// Requests without any token pass through without a principal (for routes that serve
    /// both); a token that is present but invalid is still refused.
    pub fn optional(tokens: AccessTokens) -> Self {
        Self {
            tokens,
            optional: true,
        }
    }
}

impl<S> Layer<S> for JwtAuthLayer {
    type Service = JwtAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        JwtAuth {
            inner,
            tokens: self.tokens.clone(),
            optional: self.optional,
        }
    }
}

/// The service made by [`JwtAuthLayer`].
#[derive(Debug, Clone)]
pub struct JwtAuth<S> {
    inner: S,
    tokens: AccessTokens,
    optional: bool,
}

/// The bearer token of a request: exactly one `Authorization` header with scheme `Bearer`.
///
/// # Errors
/// [`Error::MissingToken`] without one; [`Error::InvalidToken`] for a malformed header.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or(Error::MissingToken)?;
    if values.next().is_some() {
        return Err(Error::InvalidToken("several Authorization headers"));
    }
    let text = value
        .to_str()
        .map_err(|_| Error::InvalidToken("non-ASCII Authorization header"))?;
    let (scheme, token) = text.split_once(' ').ok_or(Error::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Error::MissingToken);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Error::InvalidToken("empty bearer token"));
    }
    Ok(token)
}

/// Verifies the request's bearer token. A principal must only ever come from here: any a
/// client could smuggle in through an earlier layer is dropped first.
fn authenticate<B>(
    tokens: &AccessTokens,
    request: &mut Request<B>,
) -> Result<tenantkit_core::Principal> {
    request
        .extensions_mut()
        .remove::<tenantkit_core::Principal>();
    bearer_token(request.headers()).and_then(|token| tokens.verify(token))
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for JwtAuth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        match authenticate(&self.tokens, &mut request) {
            Ok(principal) => {
                request.extensions_mut().insert(principal);
                ResponseFuture::inner(self.inner.call(request))
            }
            Err(Error::MissingToken) if self.optional => {
                ResponseFuture::inner(self.inner.call(request))
            }
            Err(err) => ResponseFuture::reject(problem_response(&err)),
        }
    }
}

/// Like [`JwtAuthLayer`], and revocation-aware: also refuses access tokens whose session has
/// been revoked (logout, logout everywhere, password change, refresh-token reuse), has expired,
/// or whose user is no longer a member, and puts the caller's *current* role in the
/// `Principal` instead of the token's, so removals and role changes take effect within the
/// check's cache period (at most 5 s), not when the token expires. Costs one lookup per
/// session per cache period.
#[derive(Debug, Clone)]
pub struct StrictJwtAuthLayer {
    tokens: AccessTokens,
    revocation: CachedSessionCheck,
}

impl StrictJwtAuthLayer {
    /// Verifies tokens with `tokens` and sessions with `revocation`.
    pub fn new(tokens: AccessTokens, revocation: CachedSessionCheck) -> Self {
        Self { tokens, revocation }
    }
}

impl<S> Layer<S> for StrictJwtAuthLayer {
    type Service = StrictJwtAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StrictJwtAuth {
            inner,
            tokens: self.tokens.clone(),
            revocation: self.revocation.clone(),
        }
    }
}

/// The service made by [`StrictJwtAuthLayer`].
#[derive(Debug, Clone)]
pub struct StrictJwtAuth<S> {
    inner: S,
    tokens: AccessTokens,
    revocation: CachedSessionCheck,
}

/// The boxed future of [`StrictJwtAuth`].
pub type StrictResponseFuture<B, E> = Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for StrictJwtAuth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<Bytes> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = StrictResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let principal = match authenticate(&self.tokens, &mut request) {
            Ok(principal) => principal,
            Err(err) => return Box::pin(std::future::ready(Ok(problem_response(&err)))),
        };
        // The inner service was made ready by `poll_ready`; take that one and leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let revocation = self.revocation.clone();
        Box::pin(async move {
            match revocation.check(&principal).await {
                Ok(SessionState::Live { role }) => {
                    // The role as stored now, not as the token remembers it.
                    let principal = match role {
                        Some(role) => principal.with_role(role),
                        None => principal,
                    };
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Ok(SessionState::Over) => {
                    Ok(problem_response(&Error::InvalidToken("session is over")))
                }
                Err(err) => Ok(problem_response(&err)),
            }
        })
    }
}
