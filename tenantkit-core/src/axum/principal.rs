//! The verified caller, as an extractor.

use ::axum::extract::{FromRequestParts, OptionalFromRequestParts};
use ::axum::response::{IntoResponse, Response};
use http::request::Parts;

use crate::{ErrorCode, Principal, Problem};

/// 401 `unauthenticated` with `WWW-Authenticate: Bearer` (RFC 6750).
pub(crate) fn unauthenticated() -> Response {
    let problem = Problem::new(
        ErrorCode::Unauthenticated,
        "This endpoint requires a bearer access token.",
    );
    let challenge = [(
        http::header::WWW_AUTHENTICATE,
        r#"Bearer realm="tenantkit""#,
    )];
    (challenge, problem).into_response()
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Response;

    /// Reads the [`Principal`] an authentication layer (tenantkit-auth's `JwtAuthLayer`) put
    /// in the request extensions; without one the request is unauthenticated (401 with
    /// `WWW-Authenticate: Bearer`). Extensions are set by server code only: no header can
    /// put a principal there.
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(unauthenticated)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
    type Rejection = std::convert::Infallible;

    /// `Option<Principal>`: the verified caller when the request carried a valid token
    /// (routes behind `JwtAuthLayer::optional`), else `None`.
    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Principal>().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::axum::test_support::send;
    use crate::{Role, SessionId, TenantId, UserId};
    use ::axum::Router;
    use ::axum::body::Body;
    use ::axum::routing::get;
    use http::{Request, StatusCode};

    fn router() -> Router {
        Router::new()
            .route(
                "/me",
                get(|caller: Principal| async move { caller.user_id().to_string() }),
            )
            .route(
                "/maybe",
                get(|caller: Option<Principal>| async move {
                    caller.map_or_else(|| "nobody".to_owned(), |c| c.user_id().to_string())
                }),
            )
    }

    fn caller() -> Principal {
        Principal::new(
            UserId::new(),
            TenantId::new(),
            Role::Member,
            [],
            SessionId::new(),
        )
    }

    #[tokio::test]
    async fn without_a_principal_in_the_extensions_the_caller_is_unauthenticated() {
        // Headers cannot stand in for the extension an authentication layer sets.
        let request = Request::get("/me")
            .header("authorization", "Bearer forged")
            .header("principal", "admin")
            .body(Body::empty())
            .expect("request");
        let (response, body) = send(router(), request).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(body["code"], "unauthenticated");
        assert_eq!(
            response.headers()[http::header::WWW_AUTHENTICATE],
            r#"Bearer realm="tenantkit""#
        );
        let request = Request::get("/maybe")
            .header("authorization", "Bearer forged")
            .body(Body::empty())
            .expect("request");
        let response = tower::ServiceExt::oneshot(router(), request)
            .await
            .expect("infallible");
        let bytes = ::axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        assert_eq!(&bytes[..], b"nobody");
    }

    #[tokio::test]
    async fn the_principal_in_the_extensions_is_the_caller() {
        let principal = caller();
        for path in ["/me", "/maybe"] {
            let mut request = Request::get(path).body(Body::empty()).expect("request");
            request.extensions_mut().insert(principal.clone());
            let response = tower::ServiceExt::oneshot(router(), request)
                .await
                .expect("infallible");
            assert_eq!(response.status(), StatusCode::OK);
            let bytes = ::axum::body::to_bytes(response.into_body(), 1024)
                .await
                .expect("body");
            assert_eq!(bytes, principal.user_id().to_string().as_bytes());
        }
    }
}
