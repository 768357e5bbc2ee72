//! axum integration (feature `axum`): extractors whose rejections are problem answers with a
//! stable code, and the layers every API wants (problem answers for bare errors, panics as a
//! generic 500, a not-found fallback, request ids, security headers).
//!
//! - [`ApiJson`]: a JSON object body; a wrong shape names the field at fault.
//! - [`ApiId`], [`ApiIds`]: ids from the path; a malformed id answers 404 like a missing one.
//! - [`IfMatch`] and [`etag`]: optimistic concurrency over [`crate::Version`].
//! - [`ClientIp`] and [`crate::ClientInfo`]: the client behind trusted reverse proxies, from
//!   the connection's `ConnectInfo` (a missing one is a loud 500, never a shared bucket).
//! - [`crate::Principal`] and `Option<Principal>`: the caller an authentication layer
//!   (tenantkit-auth's `JwtAuthLayer`) put in the request extensions.
//! - [`TenantRead`], [`TenantWrite`] and [`TenantWriteJson`] (with a database backend): a
//!   transaction scoped to the caller's tenant (with a JSON body read before it begins).
//! - [`Listing`] (with `openapi`): `limit`, `cursor` and a filter from the query string.
//! - [`layers`]: the problem, panic and not-found answers, request ids, security headers.

mod client;
mod extract;
pub mod layers;
#[cfg(feature = "openapi")]
mod listing;
mod principal;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod tx;

pub use client::ClientIp;
pub use extract::{ApiId, ApiIds, ApiJson, IfMatch, etag};
#[cfg(feature = "openapi")]
pub use listing::{Listing, MAX_QUERY_PARAMETERS, NoFilter, PageQuery, QueryFilter};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use tx::{TenantRead, TenantWrite, TenantWriteJson};

#[cfg(test)]
pub(crate) mod test_support {
    use ::axum::Router;
    use ::axum::body::Body;
    use http::{Request, Response};
    use tower::ServiceExt as _;

    /// Sends `request` through `router` in-process and returns the answer with its body
    /// parsed as JSON (`Null` when it is not JSON).
    pub(crate) async fn send(
        router: Router,
        request: Request<Body>,
    ) -> (Response<()>, serde_json::Value) {
        let response = router.oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let bytes = ::axum::body::to_bytes(body, 1 << 20).await.expect("body");
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (Response::from_parts(parts, ()), json)
    }
}
