//! End-to-end test support: the reference server running in-process on `127.0.0.1:0`, started
//! exactly as the binary starts it ([`tenantkit_server::Server`]), over a fresh database of
//! either backend, with two tenants ready and real signed access tokens.
//!
//! Tests run on both backends with [`tenantkit_core::backend_tests!`] and the [`server`]
//! fixture (or one of their own that calls [`TestServer::start_with`]).

#![doc(test(attr(deny(warnings))))]

pub mod backplane;
pub mod redis;
pub mod stripe;
pub mod ws;

use reqwest::{Client, Method, RequestBuilder};
use tenantkit_auth::AccessTokens;
use tenantkit_core::testing::{TestDb, TwoTenants};
use tenantkit_core::{Backend, Principal};
use tenantkit_server::{Config, Server};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The fixture of [`tenantkit_core::backend_tests!`] for end-to-end tests: a server with the
/// default configuration on `backend`.
pub async fn server(backend: Backend) -> Option<TestServer> {
    TestServer::start(backend).await
}

/// The password of every account the tests create: long and not a common one.
pub const PASSWORD: &str = "correct horse battery staple";

/// A running server over a fresh database with two tenants.
#[derive(Debug)]
pub struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// A plain HTTP client.
    pub client: Client,
    /// The database and its URLs (shared with the instances started beside this one).
    pub test_db: std::sync::Arc<TestDb>,
    /// Tenants `a` and `b` with their owners.
    pub world: TwoTenants,
    /// The server's token issuer (same keys and configuration).
    pub tokens: AccessTokens,
    /// The server's auth flows (for what an operator does outside HTTP, as the CLI does).
    pub flows: tenantkit_auth::flows::AuthFlows,
    /// Every email the server sent.
    pub mailer: std::sync::Arc<tenantkit_auth::MemoryMailer>,
    /// The server's realtime broadcaster (to publish directly, read its counters).
    pub realtime: tenantkit_realtime::Realtime,
    /// The server's single sign-on (for what an operator does outside HTTP).
    pub sso: Option<tenantkit_auth::sso::Sso>,
    /// The server's data folder (dev keys, outbox; shared with the instances beside it).
    pub data_dir: std::sync::Arc<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    serving: Option<tokio::task::JoinHandle<()>>,
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

    /// Starts a server with a custom configuration; its database, data folder and bind
    /// address are the test's own (a fresh database, a temporary folder, `127.0.0.1:0`).
    ///
    /// # Panics
    /// When the server cannot start.
    pub async fn start_with(backend: Backend, config: Config) -> Option<TestServer> {
        let test_db = TestDb::new(backend, &tenantkit_server::domain::all_migrations()).await?;
        let mut world = TwoTenants::create(&test_db.db).await;
        // Access tokens are checked against their sessions: the owners get real ones.
        for fixture in [&mut world.a, &mut world.b] {
            fixture.principal = live_session(&test_db.db, &fixture.principal).await;
        }
        let data_dir = std::sync::Arc::new(tempfile::tempdir().expect("a data folder"));
        Some(
            Self::launch(
                std::sync::Arc::new(test_db),
                world,
                data_dir,
                backend,
                config,
            )
            .await,
        )
    }

    /// Starts a server whose configuration knows its own address: `config` gets the base URL
    /// (`http://127.0.0.1:<port>`, bound before the server starts), for settings that name
    /// it (the public URL single sign-on's callback is under).
    ///
    /// # Panics
    /// When the server cannot start.
    pub async fn start_at(
        backend: Backend,
        config: impl FnOnce(&str) -> Config,
    ) -> Option<TestServer> {
        let test_db = TestDb::new(backend, &tenantkit_server::domain::all_migrations()).await?;
        let mut world = TwoTenants::create(&test_db.db).await;
        for fixture in [&mut world.a, &mut world.b] {
            fixture.principal = live_session(&test_db.db, &fixture.principal).await;
        }
        let data_dir = std::sync::Arc::new(tempfile::tempdir().expect("a data folder"));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let base_url = format!("http://{}", listener.local_addr().expect("local address"));
        let config = config(&base_url);
        Some(
            Self::launch_on(
                std::sync::Arc::new(test_db),
                world,
                data_dir,
                backend,
                config,
                Some(listener),
            )
            .await,
        )
    }

    /// A second instance of the same deployment: the same database, data folder (so the
    /// same keys) and world, with `config` (which should name the same Redis for events and
    /// revocations to cross). The database lives as long as any instance does.
    ///
    /// # Panics
    /// When the server cannot start.
    pub async fn start_beside(&self, config: Config) -> TestServer {
        let backend = self.test_db.db.backend();
        Self::launch(
            self.test_db.clone(),
            self.world.clone(),
            self.data_dir.clone(),
            backend,
            config,
        )
        .await
    }

    async fn launch(
        test_db: std::sync::Arc<TestDb>,
        world: TwoTenants,
        data_dir: std::sync::Arc<tempfile::TempDir>,
        backend: Backend,
        config: Config,
    ) -> TestServer {
        Self::launch_on(test_db, world, data_dir, backend, config, None).await
    }

    async fn launch_on(
        test_db: std::sync::Arc<TestDb>,
        world: TwoTenants,
        data_dir: std::sync::Arc<tempfile::TempDir>,
        backend: Backend,
        config: Config,
        listener: Option<TcpListener>,
    ) -> TestServer {
        let config = Config {
            data_dir: data_dir.path().to_owned(),
            database_url: Some(test_db.app_url.clone()),
            // PostgreSQL: the server migrates as the owner, as in production.
            database_migration_url: (backend == Backend::Postgres)
                .then(|| test_db.owner_url.clone()),
            ..config
        };
        let mailer = std::sync::Arc::new(tenantkit_auth::MemoryMailer::new());
        let server = Server::prepare(config)
            .await
            .expect("the server starts")
            .with_mailer(mailer.clone());
        let tokens = server.state().auth.tokens().clone();
        let flows = server.state().auth.clone();
        let realtime = server.state().realtime.clone();
        let sso = server.state().sso.clone();
        let listener = match listener {
            Some(listener) => listener,
            None => TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1:0"),
        };
        let base_url = format!("http://{}", listener.local_addr().expect("local address"));
        let (shutdown, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(async move {
            let stopped = async move {
                let _ = stopped.await;
            };
            server.serve(listener, stopped).await.expect("serve");
        });
        TestServer {
            base_url,
            client: Client::new(),
            test_db,
            world,
            tokens,
            flows,
            realtime,
            sso,
            mailer,
            data_dir,
            shutdown: Some(shutdown),
            serving: Some(serving),
        }
    }

    /// A request to `path` made as `principal` on a connection of its own, never reused (for
    /// requests the server may refuse before reading their body, after which it closes the
    /// connection: nothing else may be sent on it).
    ///
    /// # Panics
    /// When the token cannot be issued or the client cannot be built.
    pub fn request_alone(
        &self,
        principal: &Principal,
        method: Method,
        path: &str,
    ) -> RequestBuilder {
        let token = self
            .tokens
            .issue(principal)
            .expect("issue access token")
            .token;
        let client = Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("a client");
        client
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(token)
    }

    /// A request to `path` with no credentials.
    pub fn anonymous(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base_url))
    }

    /// A request to `path` made as `principal`, with a freshly issued bearer token.
    ///
    /// # Panics
    /// When the token cannot be issued.
    pub fn request(&self, principal: &Principal, method: Method, path: &str) -> RequestBuilder {
        let token = self
            .tokens
            .issue(principal)
            .expect("issue access token")
            .token;
        self.anonymous(method, path).bearer_auth(token)
    }
}

impl TestServer {
    /// The token in the newest email to `to` whose subject contains `subject`, waiting up to
    /// 30 seconds for background delivery (a busy machine; a quick one answers at once).
    ///
    /// # Panics
    /// When no such email arrives.
    pub async fn mailed_token(&self, to: &str, subject: &str) -> String {
        for _ in 0..600 {
            let found = self
                .mailer
                .sent()
                .into_iter()
                .rev()
                .find(|m| m.to == to && m.subject.contains(subject));
            if let Some(message) = found {
                let (_, after) = message
                    .body
                    .split_once("token=")
                    .expect("a link with a token");
                return after.split_whitespace().next().expect("token").to_owned();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("no email to {to} about {subject:?}");
    }
}

impl TestServer {
    /// Adds a new user with `role` to `tenant` and returns them as a caller with a real,
    /// stored session (the server checks access tokens against their sessions).
    ///
    /// # Panics
    /// When the database refuses.
    pub async fn add_user(
        &self,
        tenant: &tenantkit_core::testing::TenantFixture,
        role: tenantkit_core::Role,
    ) -> (tenantkit_core::User, Principal) {
        let (user, principal) = tenant.add_user(&self.test_db.db, role).await;
        (user, self.with_live_session(&principal).await)
    }

    /// `principal` with a real, stored session (fixture principals carry made-up session ids,
    /// which the server's session check refuses).
    ///
    /// # Panics
    /// When the session cannot be stored.
    pub async fn with_live_session(&self, principal: &Principal) -> Principal {
        live_session(&self.test_db.db, principal).await
    }
}

/// `principal` with a real, stored session in `db`.
async fn live_session(db: &tenantkit_core::Database, principal: &Principal) -> Principal {
    let user = db
        .find_user(principal.user_id())
        .await
        .expect("find user")
        .expect("the principal's user exists");
    let now = tenantkit_core::now();
    let session = tenantkit_auth::SessionRecord::new(
        principal.user_id(),
        principal.tenant_id(),
        now,
        now + std::time::Duration::from_secs(3600),
    )
    .with_credentials_epoch(user.credentials_epoch);
    let hash = uuid::Uuid::now_v7().into_bytes();
    let created = tenantkit_auth::SessionStore::create(db, &session, &hash)
        .await
        .expect("store session");
    assert!(created, "made under the user's current credentials epoch");
    Principal::new(
        principal.user_id(),
        principal.tenant_id(),
        principal.role(),
        Vec::<String>::new(),
        session.id,
    )
}

/// An answer: status, headers, and the JSON body (`Null` when there is none).
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: reqwest::StatusCode,
    /// The headers.
    pub headers: reqwest::header::HeaderMap,
    /// The JSON body, or `Null` for an empty one.
    pub body: serde_json::Value,
}

impl TestServer {
    /// Sends `method path` with an optional JSON body, as `principal` (a fresh token) or
    /// anonymously.
    ///
    /// # Panics
    /// When the request fails or a non-empty body is not JSON.
    pub async fn call(
        &self,
        principal: Option<&Principal>,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Reply {
        let request = match principal {
            Some(principal) => self.request(principal, method, path),
            None => self.anonymous(method, path),
        };
        Self::reply(request, body).await
    }

    /// Like [`TestServer::call`], with a given bearer token (or none).
    ///
    /// # Panics
    /// When the request fails or a non-empty body is not JSON.
    pub async fn call_with_token(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Reply {
        let mut request = self.anonymous(method, path);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Self::reply(request, body).await
    }

    async fn reply(mut request: RequestBuilder, body: Option<serde_json::Value>) -> Reply {
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("send");
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON body")
        };
        Reply {
            status,
            headers,
            body,
        }
    }
}

impl TestServer {
    /// Signs `email` up as the owner of a new tenant with slug `slug` and [`PASSWORD`]; the
    /// answer (tokens, `user`, `tenant`).
    ///
    /// # Panics
    /// Unless the answer is `201` with `Cache-Control: no-store`.
    pub async fn signup(&self, email: &str, slug: &str) -> serde_json::Value {
        let body = serde_json::json!({
            "email": email, "password": PASSWORD, "tenant_name": "Acme Rockets", "tenant_slug": slug,
        });
        let reply = self
            .call(None, Method::POST, "/v1/auth/signup", Some(body))
            .await;
        assert_eq!(reply.status, reqwest::StatusCode::CREATED, "{}", reply.body);
        assert_eq!(reply.headers["cache-control"], "no-store");
        reply.body
    }
}

/// Parses a JSON string field into an id (or anything else `FromStr`).
///
/// # Panics
/// When the value is not a string or does not parse.
pub fn id<T: std::str::FromStr>(value: &serde_json::Value) -> T {
    value
        .as_str()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("not an id: {value}"))
}

impl TestServer {
    /// Shuts the server down as SIGTERM does and waits until `serve` has returned (requests
    /// in flight finished or, after the grace period, their connections closed).
    ///
    /// # Panics
    /// When serving failed.
    pub async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(serving) = self.serving.take() {
            serving.await.expect("the server stops cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
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

pub use tenantkit_server::domain::testing::{create_project, create_task};

/// The workspace's README, whose Rust code blocks run as this crate's doctests (`cargo test
/// --workspace`): this crate depends on every library crate, so a block may use any of them.
/// Blocks that are not Rust carry their language (`sh`, `toml`, `sql`, `json`).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
