//! axum integration (feature `axum`): `IntoResponse` for this crate's [`Error`], and the
//! extractors of tenantkit-core's `axum` module re-exported.
//!
//! The [`JwtAuthLayer`](crate::JwtAuthLayer) puts the verified [`Principal`] in the request
//! extensions; handlers take it as `Principal` (401 without one) or `Option<Principal>`
//! (behind `JwtAuthLayer::optional`). Those extractors are implemented in tenantkit-core
//! (Rust's orphan rule puts an axum trait for a core type there); this module re-exports them
//! with the rest, so an axum user of this crate finds everything here.
//!
//! ```
//! use axum::Router;
//! use axum::routing::get;
//! use tenantkit_auth::extract::Principal;
//!
//! async fn me(caller: Principal) -> String {
//!     caller.user_id().to_string()
//! }
//!
//! async fn greeting(caller: Option<Principal>) -> &'static str {
//!     if caller.is_some() { "welcome back" } else { "hello" }
//! }
//!
//! let app: Router = Router::new().route("/me", get(me)).route("/", get(greeting));
//! # let _ = app;
//! ```

use axum::response::{IntoResponse, Response};

use crate::Error;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use tenantkit_core::ClientInfo;
pub use tenantkit_core::Principal;
pub use tenantkit_core::axum::*;

impl IntoResponse for Error {
    /// The error's problem ([`crate::problem_response`]): its status, code and headers
    /// (`WWW-Authenticate` on 401s, `Retry-After` on 429 and 503).
    fn into_response(self) -> Response {
        crate::problem_response(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use http::{Request, StatusCode, header};
    use tower::ServiceExt as _;

    async fn answer(err: Error) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let err = std::sync::Arc::new(std::sync::Mutex::new(Some(err)));
        let app: Router = Router::new().route(
            "/",
            get(move || {
                let err = err.clone();
                async move {
                    match err.lock().ok().and_then(|mut e| e.take()) {
                        Some(err) => Err::<(), Error>(err),
                        None => Ok(()),
                    }
                }
            }),
        );
        let response = app
            .oneshot(Request::get("/").body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 16).await.expect("body");
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).expect("problem json"),
        )
    }

    #[tokio::test]
    async fn auth_errors_answer_their_problem_with_its_headers() {
        let (status, headers, body) = answer(Error::TokenExpired).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["code"], "token_expired");
        assert!(headers.contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(headers[header::CONTENT_TYPE], tenantkit_core::PROBLEM_JSON);

        let (status, headers, body) = answer(Error::RateLimited {
            retry_after: std::time::Duration::from_millis(1500),
        })
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(body["code"], "rate_limited");
        assert_eq!(headers[header::RETRY_AFTER], "2");

        // Internal causes stay in the log.
        let (status, _, body) = answer(Error::Hashing("pool secret detail".into())).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!body.to_string().contains("secret detail"));
    }
}
