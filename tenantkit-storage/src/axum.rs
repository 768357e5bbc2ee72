//! axum integration (feature `axum`): `IntoResponse` for this crate's [`Error`] (its problem,
//! `application/problem+json` with a stable `code`), and, with `local`, the routes answering a
//! [`LocalStore`](crate::LocalStore)'s signed URLs as a router to mount: [`local_routes`].
//!
//! A local store signs URLs under the base URL it was made with; nest [`local_routes`] at
//! that URL's path. The routes stream bodies and bound them by the signed size, so mount them
//! outside the API's body limit and request timeout (their own transfer limits apply, see
//! [`TransferLimits`](crate::TransferLimits)).
#![cfg_attr(
    feature = "local",
    doc = r##"
```
use axum::Router;
use tenantkit_storage::LocalStore;

# fn main() -> Result<(), Box<dyn std::error::Error>> {
# let dir = tempfile::tempdir()?;
let store = LocalStore::new(dir.path(), "https://api.example/files", &[7u8; 32])?;
let app: Router = Router::new()
    // … the app's own routes, under its body limit …
    .nest("/files", tenantkit_storage::axum::local_routes(store.service()));
# let _ = app;
# Ok(())
# }
```
"##
)]

use axum::response::{IntoResponse, Response};
use tenantkit_core::Problem;

use crate::Error;

impl IntoResponse for Error {
    /// The error's problem ([`Problem::from`]): its status and stable code, as
    /// `application/problem+json` (store and configuration errors are logged and answered
    /// without their details).
    fn into_response(self) -> Response {
        Problem::from(&self).into_response()
    }
}

/// The routes answering a local store's signed URLs, to nest at the path of the base URL the
/// store was made with: `PUT /upload/{token}` (201 once the body is stored, or a problem) and
/// `GET`/`HEAD /download/{token}`. Other methods answer 405; the signature is the only
/// authorization, so put them outside any authentication layer.
#[cfg(feature = "local")]
pub fn local_routes<S>(service: crate::LocalStorageService) -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    use axum::routing::{get_service, put_service};
    axum::Router::new()
        .route("/upload/{token}", put_service(service.clone()))
        .route("/download/{token}", get_service(service))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::{Request, StatusCode, header};
    use tower::ServiceExt as _;

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
    }

    #[tokio::test]
    async fn errors_answer_their_problem() {
        let response = Error::QuotaExceeded.into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(body_json(response).await["code"], "quota_exceeded");
        let response = Error::Store("s3 is down at 10.0.0.7".into()).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = body_json(response).await;
        assert!(!body.to_string().contains("10.0.0.7"), "{body}");
    }

    /// Nested where the store's base URL points, the routes take an upload to its signed URL
    /// and serve it back from a signed download URL; other methods and paths are refused.
    #[cfg(feature = "local")]
    #[tokio::test]
    async fn local_routes_mount_under_the_base_url() {
        use crate::{ObjectId, ObjectKey, ObjectStore as _, Sha256, UploadIntent, UploadMethod};

        let dir = tempfile::tempdir().expect("dir");
        let store = crate::LocalStore::new(dir.path(), "http://localhost/api/files", &[9u8; 32])
            .expect("store");
        let app: axum::Router = axum::Router::new()
            .route("/api/other", axum::routing::get(|| async { "other" }))
            .nest("/api/files", local_routes(store.service()));
        let bytes = b"hello, mounted routes".to_vec();
        let key = ObjectKey::new(tenantkit_core::TenantId::new(), ObjectId::new());
        let intent = UploadIntent {
            filename: "hello.txt".into(),
            content_type: "text/plain".into(),
            size: bytes.len() as u64,
            sha256: Sha256::of(&bytes),
        };
        let now = tenantkit_core::now();
        let signed = store
            .sign_upload(
                &key,
                &intent,
                UploadMethod::Put,
                now,
                time::Duration::minutes(5),
            )
            .await
            .expect("signed");
        let path = signed
            .url
            .strip_prefix("http://localhost")
            .expect("under the base url")
            .to_owned();
        assert!(path.starts_with("/api/files/upload/"), "{path}");
        let mut put = Request::put(&path);
        for (name, value) in &signed.headers {
            put = put.header(name.as_str(), value.as_str());
        }
        let response = app
            .clone()
            .oneshot(put.body(Body::from(bytes.clone())).expect("request"))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::CREATED);

        // The same URL with GET is not a download.
        let response = app
            .clone()
            .oneshot(Request::get(&path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);

        let download = store
            .sign_download(
                &key,
                "hello.txt",
                "text/plain",
                now,
                time::Duration::minutes(5),
            )
            .await
            .expect("download");
        let path = download
            .url
            .strip_prefix("http://localhost")
            .expect("under the base url")
            .to_owned();
        let response = app
            .clone()
            .oneshot(Request::get(&path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        assert_eq!(body.as_ref(), bytes.as_slice());

        // A tampered token is refused as a problem; the app's other routes are untouched.
        let response = app
            .clone()
            .oneshot(
                Request::get(format!("{path}x"))
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(body_json(response).await["code"], "forbidden");
        let response = app
            .oneshot(
                Request::get("/api/other")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
    }
}
