//! Load harness for the reference server. Traffic goes to 127.0.0.1 only, for a bounded time.
//!
//! ```text
//! cargo run --release -p tenantkit-load -- login-burst              # SQLite
//! bash scripts/with-services.sh cargo run --release -p tenantkit-load -- login-burst --backend postgres
//! ```
//!
//! The server runs in this process (same 2 cores as the load), through the same application
//! the binary serves; figures are therefore a lower bound of a dedicated server.

mod fanout;
mod realtime;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use reqwest::Method;
use serde_json::json;
use tenantkit_core::Backend;
use tenantkit_core::testing::TestDb;
use tenantkit_server::{Config, Server};

/// The password of every account the harness signs up.
const PASSWORD: &str = "correct horse battery staple";

/// POSTs `body` to `url` (with `bearer`, if any) and returns the JSON answer.
///
/// # Panics
/// When the request fails or answers an error status: the harness cannot go on.
async fn post_json(
    client: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    body: &serde_json::Value,
) -> serde_json::Value {
    let mut request = client.post(url).json(body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    request
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// Signs up `email` with a new tenant at the server at `base`: the signup answer.
async fn signup(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    tenant_name: &str,
) -> serde_json::Value {
    let body = json!({"email": email, "password": PASSWORD, "tenant_name": tenant_name});
    post_json(client, &format!("{base}/v1/auth/signup"), None, &body).await
}

/// The server under load: started in this process through the same [`Server`] the binary
/// runs, on a fresh database, listening on 127.0.0.1.
struct Target {
    base_url: String,
    client: reqwest::Client,
    realtime: tenantkit_realtime::Realtime,
    _db: TestDb,
    _data: tempfile::TempDir,
}

impl Target {
    /// Starts the server; `None` when the backend is not available.
    async fn start(backend: Backend, config: Config) -> Option<Target> {
        let db = TestDb::empty(backend).await?;
        let data = tempfile::tempdir().expect("a data folder");
        let config = Config {
            data_dir: data.path().to_owned(),
            database_url: Some(db.app_url.clone()),
            database_migration_url: (backend == Backend::Postgres).then(|| db.owner_url.clone()),
            ..config
        };
        let server = Server::prepare(config).await.expect("the server starts");
        let realtime = server.state().realtime.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let base_url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(server.serve(listener, std::future::pending::<()>()));
        Some(Target {
            base_url,
            client: reqwest::Client::new(),
            realtime,
            _db: db,
            _data: data,
        })
    }

    /// Signs up `email` with a new tenant: the signup answer (tokens, tenant).
    async fn signup(&self, email: &str, tenant_name: &str) -> serde_json::Value {
        signup(&self.client, &self.base_url, email, tenant_name).await
    }

    fn anonymous(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base_url))
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Scenario {
    /// `GET /v1/me` latency alone, then during a burst of logins (argon2 on a bounded pool).
    LoginBurst,
    /// Authenticated, tenant-scoped list, get and create of projects, one after the other,
    /// each at `--connections` concurrent clients.
    Crud,
    /// WebSocket broadcaster: server memory per idle connection (`--sockets`, clients in a
    /// child process), fan-out latency (`--rounds` at `--rate` per second, one event per
    /// tenant of 1000 subscribers each), publish throughput. Needs `ulimit -n` above twice
    /// `--sockets` (scripts/bench-realtime.sh sets it).
    Realtime,
    /// End to end against servers running elsewhere on 127.0.0.1 (`--target`,
    /// `--publish-url`, `--subscribe-url`): `--subscribers` clients, `--rounds` records
    /// created over HTTP at `--rate` per second, delivery latency per subscriber.
    Fanout,
    /// The child process of `realtime` (not run by hand).
    #[value(hide = true)]
    RealtimeClients,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BackendArg {
    Sqlite,
    Postgres,
}

#[derive(Debug, Parser)]
#[command(about = "Drive the reference server on 127.0.0.1 and report rps and latency percentiles")]
struct Args {
    #[arg(value_enum)]
    scenario: Scenario,
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: BackendArg,
    /// Seconds per phase (bounded to 60).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Workers calling the measured endpoint.
    #[arg(long, default_value_t = 10)]
    readers: usize,
    /// Workers logging in during the burst phase.
    #[arg(long, default_value_t = 40)]
    logins: usize,
    /// Concurrent clients in the CRUD scenario.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// WebSocket connections in the realtime scenario.
    #[arg(long, default_value_t = 10_000)]
    sockets: usize,
    /// Connections per tenant in the realtime scenario (one event per tenant per round
    /// reaches this many subscribers).
    #[arg(long, default_value_t = 1000)]
    per_tenant: usize,
    /// Fan-out rounds in the realtime scenario.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Fan-out rounds per second.
    #[arg(long, default_value_t = 10)]
    rate: u32,
    /// The server's WebSocket URL (`realtime-clients` only).
    #[arg(long, default_value = "")]
    url: String,
    /// Deliveries to wait for (`realtime-clients` only).
    #[arg(long, default_value_t = 0)]
    expect: usize,
    /// The server `fanout` measures.
    #[arg(long, value_enum, default_value = "tenantkit")]
    target: fanout::Target,
    /// `fanout`: the base URL records are created through (`http://127.0.0.1:PORT`).
    #[arg(long, default_value = "")]
    publish_url: String,
    /// `fanout`: base URLs the subscribers connect to, round-robin (repeat the option for
    /// several instances); the publish URL when none is given.
    #[arg(long)]
    subscribe_url: Vec<String>,
    /// `fanout` on PocketBase: a user's token.
    #[arg(long, default_value = "")]
    token: String,
    /// `fanout` on PocketBase: the user's tenant id.
    #[arg(long, default_value = "")]
    tenant: String,
    /// `fanout`: subscribers.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// `fanout`: server processes whose memory to report (repeat for several).
    #[arg(long)]
    server_pid: Vec<u32>,
}

/// Latencies of one kind of request.
#[derive(Debug, Default)]
struct Samples {
    latencies: Vec<Duration>,
    errors: usize,
}

impl Samples {
    fn report(&mut self, name: &str, elapsed: Duration) {
        self.latencies.sort_unstable();
        let pct = |p: f64| {
            let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
            self.latencies
                .get(index)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        println!(
            "{name:<34} {:>8} req  {:>8.1} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}",
            self.latencies.len(),
            self.latencies.len() as f64 / elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99),
            self.errors
        );
    }
}

/// Runs `workers` loops of `request` until `until`, collecting latencies of 2xx answers.
async fn drive<F, Fut>(workers: usize, until: Instant, request: F) -> Samples
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send,
{
    let request = Arc::new(request);
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let request = request.clone();
            tokio::spawn(async move {
                let mut samples = Samples::default();
                while Instant::now() < until {
                    let start = Instant::now();
                    match request().await {
                        Ok(response) if response.status().is_success() => {
                            samples.latencies.push(start.elapsed())
                        }
                        _ => samples.errors += 1,
                    }
                }
                samples
            })
        })
        .collect();
    let mut all = Samples::default();
    for task in tasks {
        if let Ok(mut samples) = task.await {
            all.latencies.append(&mut samples.latencies);
            all.errors += samples.errors;
        }
    }
    all
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Scenario::RealtimeClients = args.scenario {
        realtime::clients(&args.url, args.sockets, args.expect).await;
        return;
    }
    if let Scenario::Fanout = args.scenario {
        assert!(
            args.publish_url.starts_with("http://127.0.0.1:"),
            "--publish-url must be http://127.0.0.1:PORT"
        );
        let subscribe_urls = if args.subscribe_url.is_empty() {
            vec![args.publish_url.clone()]
        } else {
            args.subscribe_url.clone()
        };
        assert!(
            subscribe_urls
                .iter()
                .all(|u| u.starts_with("http://127.0.0.1:")),
            "--subscribe-url must be http://127.0.0.1:PORT"
        );
        fanout::run(fanout::Plan {
            target: args.target,
            publish_url: args.publish_url,
            subscribe_urls,
            token: args.token,
            tenant: args.tenant,
            subscribers: args.subscribers,
            rounds: args.rounds.clamp(1, 1000),
            rate: args.rate,
            server_pids: args.server_pid,
        })
        .await;
        return;
    }
    let backend = match args.backend {
        BackendArg::Sqlite => Backend::Sqlite,
        BackendArg::Postgres => Backend::Postgres,
    };
    let phase = Duration::from_secs(args.seconds.clamp(1, 60));
    // Rate limits and the per-client connection cap would (rightly) stop a burst from one
    // address; lift them here.
    let config = Config {
        max_connections_per_client: usize::MAX,
        rate_per_ip: std::num::NonZeroU32::MAX,
        rate_refresh_per_ip: std::num::NonZeroU32::MAX,
        rate_per_account: std::num::NonZeroU32::MAX,
        rate_per_account_total: std::num::NonZeroU32::MAX,
        // WebSockets hold their HTTP connection.
        max_connections: args.sockets.max(4096) + 1024,
        realtime_max_connections_per_tenant: args.per_tenant.max(1),
        ..Config::default()
    };
    let Some(server) = Target::start(backend, config).await else {
        eprintln!("PostgreSQL is not available: run under scripts/with-services.sh");
        std::process::exit(2);
    };
    let server = Arc::new(server);
    let signup = server.signup("load@example.com", "Load").await;
    let access = Arc::<str>::from(signup["access_token"].as_str().expect("access token"));
    println!(
        "backend {backend}, {} s per phase, {} readers, {} login workers",
        phase.as_secs(),
        args.readers,
        args.logins
    );

    let me = {
        let (server, access) = (server.clone(), access.clone());
        move || {
            server
                .anonymous(Method::GET, "/v1/me")
                .bearer_auth(&*access)
                .send()
        }
    };
    match args.scenario {
        Scenario::RealtimeClients | Scenario::Fanout => {}
        Scenario::Realtime => {
            let mut tenants = vec![
                signup["tenant"]["id"]
                    .as_str()
                    .expect("tenant")
                    .parse()
                    .expect("tenant id"),
            ];
            let mut tokens = vec![access.to_string()];
            while tenants.len() * args.per_tenant.max(1) < args.sockets {
                let n = tenants.len();
                let more = server
                    .signup(&format!("load{n}@example.com"), &format!("Load {n}"))
                    .await;
                tenants.push(
                    more["tenant"]["id"]
                        .as_str()
                        .expect("tenant")
                        .parse()
                        .expect("tenant id"),
                );
                tokens.push(more["access_token"].as_str().expect("token").to_owned());
            }
            realtime::run(
                &server.base_url,
                &server.realtime,
                &tenants,
                &tokens,
                args.sockets,
                args.rounds,
                args.rate,
            )
            .await;
        }
        Scenario::Crud => {
            // Some data to list and read: 200 projects.
            let mut ids = Vec::new();
            for i in 0..200 {
                let created = post_json(
                    &server.client,
                    &format!("{}/v1/projects", server.base_url),
                    Some(&access),
                    &json!({"name": format!("seed {i}")}),
                )
                .await;
                ids.push(created["id"].as_str().expect("id").to_owned());
            }
            let ids = Arc::new(ids);
            let list = {
                let (server, access) = (server.clone(), access.clone());
                move || {
                    server
                        .anonymous(Method::GET, "/v1/projects?limit=20")
                        .bearer_auth(&*access)
                        .send()
                }
            };
            let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let get = {
                let (server, access, ids, counter) =
                    (server.clone(), access.clone(), ids.clone(), counter.clone());
                move || {
                    let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % ids.len();
                    server
                        .anonymous(Method::GET, &format!("/v1/projects/{}", ids[i]))
                        .bearer_auth(&*access)
                        .send()
                }
            };
            let create = {
                let (server, access) = (server.clone(), access.clone());
                move || {
                    server
                        .anonymous(Method::POST, "/v1/projects")
                        .bearer_auth(&*access)
                        .json(&json!({"name": "load"}))
                        .send()
                }
            };
            let start = Instant::now();
            drive(args.connections, start + phase, list)
                .await
                .report("GET /v1/projects?limit=20", start.elapsed());
            let start = Instant::now();
            drive(args.connections, start + phase, get)
                .await
                .report("GET /v1/projects/{id}", start.elapsed());
            let start = Instant::now();
            drive(args.connections, start + phase, create)
                .await
                .report("POST /v1/projects", start.elapsed());
        }
        Scenario::LoginBurst => {
            let start = Instant::now();
            let mut baseline = drive(args.readers, start + phase, me.clone()).await;
            baseline.report("GET /v1/me (alone)", start.elapsed());

            let start = Instant::now();
            let until = start + phase;
            let login = {
                let server = server.clone();
                move || {
                    server
                        .anonymous(Method::POST, "/v1/auth/login")
                        .json(&json!({"email": "load@example.com", "password": PASSWORD}))
                        .send()
                }
            };
            let (mut during, mut logins) = tokio::join!(
                drive(args.readers, until, me),
                drive(args.logins, until, login)
            );
            during.report("GET /v1/me (during login burst)", start.elapsed());
            logins.report("POST /v1/auth/login (burst)", start.elapsed());
        }
    }
}
