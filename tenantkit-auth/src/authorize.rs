//! `RequirePermission` and `RequireScope`: 403 unless the verified caller may; and
//! `RequireLayer::amr`: 401 unless the caller signed in with a method (step-up).

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tenantkit_core::{Permission, Principal};
use tower::{Layer, Service};

use crate::future::ResponseFuture;
use crate::{Error, problem_response};

/// What a [`RequireLayer`] checks.
#[derive(Debug, Clone)]
enum Requirement {
    Permission(Permission),
    Scope(Arc<str>),
    Amr(&'static str),
}

impl Requirement {
    fn check(&self, principal: Option<&Principal>) -> Result<(), Error> {
        // Without a principal the auth layer is missing or was skipped: unauthenticated.
        let principal = principal.ok_or(Error::MissingToken)?;
        let allowed = match self {
            Requirement::Permission(permission) => principal.can(*permission),
            Requirement::Scope(scope) => principal.has_scope(scope),
            Requirement::Amr(method) => {
                return if principal.has_amr(method) {
                    Ok(())
                } else {
                    Err(Error::InsufficientAuthentication(method))
                };
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(Error::Forbidden)
        }
    }
}

/// Refuses (403) requests whose principal lacks a permission or scope. Mount it inside
/// [`crate::JwtAuthLayer`].
#[derive(Debug, Clone)]
pub struct RequireLayer {
    requirement: Requirement,
}

/// The layer that requires a [`Permission`] of the caller's role.
pub type RequirePermissionLayer = RequireLayer;
/// The layer that requires an OAuth scope of the caller's token.
pub type RequireScopeLayer = RequireLayer;

impl RequireLayer {
    /// Requires `permission` (403 when the caller's role lacks it).
    pub fn permission(permission: Permission) -> Self {
        Self {
            requirement: Requirement::Permission(permission),
        }
    }

    /// Requires the caller's session to have signed in with `method` (an RFC 8176 `amr`
    /// value, such as [`tenantkit_core::amr::OTP`]): step-up for sensitive routes (billing
    /// changes, SSO settings). Otherwise `401 insufficient_user_authentication` with RFC
    /// 9470's `WWW-Authenticate` challenge: the client signs in again with a second factor.
    pub fn amr(method: &'static str) -> Self {
        Self {
            requirement: Requirement::Amr(method),
        }
    }

    /// Requires `scope` in the token (403 when absent).
    pub fn scope(scope: impl Into<Arc<str>>) -> Self {
        Self {
            requirement: Requirement::Scope(scope.into()),
        }
    }
}

impl<S> Layer<S> for RequireLayer {
    type Service = Require<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Require {
            inner,
            requirement: self.requirement.clone(),
        }
    }
}

/// The service made by [`RequireLayer`].
#[derive(Debug, Clone)]
pub struct Require<S> {
    inner: S,
    requirement: Requirement,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Require<S>
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

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        match self
            .requirement
            .check(request.extensions().get::<Principal>())
        {
            Ok(()) => ResponseFuture::inner(self.inner.call(request)),
            Err(err) => ResponseFuture::reject(problem_response(&err)),
        }
    }
}
