//! End-to-end test support: the reference server running in-process on `127.0.0.1:0`, over a
//! fresh database of either backend, with two tenants ready.
//!
//! Until authentication lands, [`TestServer`] stands in for the auth layer: a request may
//! carry a test-only header naming the principal, which a test-only layer turns into the
//! `Principal` extension the real auth layer will set. That layer exists only in this test
//! crate, never in the server.

use std::str::FromStr;

use axum::http::{HeaderName, HeaderValue, Request};
use reqwest::{Client, Method, RequestBuilder};
use tenantkit_core::testing::{TestDb, TwoTenants};
use tenantkit_core::{Backend, Principal, Role, SessionId, TenantId, UserId};
use tenantkit_server::{app, AppState, Config};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const TEST_PRINCIPAL: HeaderName = HeaderName::from_static("x-test-principal");

/// A running server over a fresh database with two tenants.
#[derive(Debug)]
pub struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// A plain HTTP client.
    pub client: Client,
    /// The database and its URLs.
    pub test_db: TestDb,
    /// Tenants `a` and `b` with their owners.
    pub world: TwoTenants,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TestServer {
    /// Starts a server on `backend` with the default configuration; `None` when the backend
    /// is not available outside CI.
    ///
    /// # Panics
    /// When the server cannot start.
    pub async fn start(backend: Backend) -> Option<TestServer> {
        Self::start_with(backend, Config::default()).await
    }

    /// Starts a server with a custom configuration (its bind address is ignored).
    ///
    /// # Panics
    /// When the server cannot start.
    pub async fn start_with(backend: Backend, config: Config) -> Option<TestServer> {
        let test_db = TestDb::new(backend).await?;
        let world = TwoTenants::create(&test_db.db).await;
        let router = app(AppState::new(test_db.db.clone()), &config).layer(
            tower::util::MapRequestLayer::new(principal_from_test_header),
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let base_url = format!("http://{}", listener.local_addr().expect("local address"));
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
        });
        Some(TestServer {
            base_url,
            client: Client::new(),
            test_db,
            world,
            shutdown: Some(shutdown),
        })
    }

    /// A request to `path` with no credentials.
    pub fn anonymous(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base_url))
    }

    /// A request to `path` made as `principal`.
    pub fn request(&self, principal: &Principal, method: Method, path: &str) -> RequestBuilder {
        let who = format!(
            "{}:{}:{}",
            principal.user_id(),
            principal.tenant_id(),
            principal.role()
        );
        self.anonymous(method, path)
            .header(TEST_PRINCIPAL.as_str(), who)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

fn principal_from_test_header<B>(mut request: Request<B>) -> Request<B> {
    let principal = request
        .headers()
        .get(&TEST_PRINCIPAL)
        .and_then(parse_principal);
    if let Some(principal) = principal {
        request.extensions_mut().insert(principal);
    }
    request
}

fn parse_principal(value: &HeaderValue) -> Option<Principal> {
    let text = value.to_str().ok()?;
    let mut parts = text.split(':');
    let user = UserId::from_str(parts.next()?).ok()?;
    let tenant = TenantId::from_str(parts.next()?).ok()?;
    let role = Role::from_str(parts.next()?).ok()?;
    Some(Principal::new(
        user,
        tenant,
        role,
        Vec::<String>::new(),
        SessionId::new(),
    ))
}

/// Reads a response as problem JSON, checking the media type and the status/body agreement.
///
/// # Panics
/// When the response is not `application/problem+json` or is inconsistent.
pub async fn problem(response: reqwest::Response) -> serde_json::Value {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json", "status {status}");
    let body: serde_json::Value = response.json().await.expect("problem JSON body");
    assert_eq!(body["status"], status, "{body}");
    for field in ["type", "title", "detail", "code"] {
        assert!(body[field].is_string(), "problem lacks {field}: {body}");
    }
    body
}

/// Runs `$test(server)` once per backend as `sqlite::$test` and `postgres::$test`.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(server) = $crate::TestServer::start(tenantkit_core::Backend::Sqlite).await else { return };
                    super::$test(server).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(server) = $crate::TestServer::start(tenantkit_core::Backend::Postgres).await else { return };
                    super::$test(server).await;
                }
            )*
        }
    };
}
