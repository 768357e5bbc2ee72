//! The real `tenantkit-server` binary as a child process of a test. It listens on a port the
//! kernel picks (`TENANTKIT_BIND=127.0.0.1:0`) and the test reads the address from the
//! server's `listening` log line: a port chosen by the test and bound later by the server
//! could be taken by another process in between (any client's ephemeral port), and the test
//! would then talk to a stranger.

// Each test binary uses part of this module.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bounds a broken start only: a busy machine may take a while, a ready server answers at once.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A running server: its process, its base URL and the log lines it wrote so far.
pub(crate) struct Server {
    /// The process.
    pub(crate) child: Child,
    /// `http://127.0.0.1:<port>`.
    pub(crate) base: String,
    logs: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts `command` (the binary, configured by the test; its bind address is set here)
    /// and waits until it answers `/readyz` with `ready`.
    pub(crate) async fn start(mut command: Command) -> Server {
        command
            .env("TENANTKIT_BIND", "127.0.0.1:0")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn server");
        let stderr = child.stderr.take().expect("the server's stderr");
        let logs = Arc::new(Mutex::new(String::new()));
        let (announce, announced) = mpsc::channel();
        let reader = {
            let logs = Arc::clone(&logs);
            std::thread::spawn(move || {
                let mut announce = Some(announce);
                let mut stderr = BufReader::new(stderr);
                let mut bytes = Vec::new();
                // Every byte is drained (a line that is not UTF-8 too), so the server never
                // blocks on a full pipe.
                while stderr.read_until(b'\n', &mut bytes).is_ok_and(|n| n > 0) {
                    let line = String::from_utf8_lossy(&bytes).trim_end().to_owned();
                    bytes.clear();
                    if let Some(address) = listening_address(&line)
                        && let Some(announce) = announce.take()
                    {
                        let _ = announce.send(address);
                    }
                    let mut logs = logs.lock().expect("logs");
                    logs.push_str(&line);
                    logs.push('\n');
                }
            })
        };
        let mut server = Server {
            child,
            base: String::new(),
            logs,
            reader: Some(reader),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let address = loop {
            if let Ok(address) = announced.try_recv() {
                break address;
            }
            server.exited_early();
            assert!(
                Instant::now() < deadline,
                "server did not listen within {START_TIMEOUT:?}: {}",
                server.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        server.base = format!("http://{address}");
        let client = reqwest::Client::new();
        loop {
            if let Ok(response) = client.get(format!("{}/readyz", server.base)).send().await {
                assert_eq!(response.status(), 200);
                let body: serde_json::Value = response.json().await.expect("json");
                assert_eq!(body["status"], "ready");
                return server;
            }
            server.exited_early();
            assert!(
                Instant::now() < deadline,
                "server did not become ready within {START_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn exited_early(&mut self) {
        if let Some(status) = self.child.try_wait().expect("poll child") {
            panic!("server exited early with {status}: {}", self.logs());
        }
    }

    /// The log lines so far.
    pub(crate) fn logs(&self) -> String {
        self.logs.lock().expect("logs").clone()
    }

    /// SIGTERM, then the exit status (within `within`, else the process is killed and the
    /// test fails) and every log line it wrote.
    pub(crate) fn stop(mut self, within: Duration) -> (ExitStatus, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let exit = wait_exit(&mut self.child, within);
        if let Some(reader) = self.reader.take() {
            reader.join().expect("log reader");
        }
        (exit, self.logs())
    }

    /// SIGKILL, and waits for the process to be gone.
    pub(crate) fn kill9(mut self) {
        let status = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let _ = self.child.wait();
    }
}

/// A test that fails midway does not leave its server running.
impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The exit status of `child` within `within` (else it is killed and the test fails).
pub(crate) fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("poll child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("server did not stop within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The address of a `listening address=<address>` log line (pretty or JSON format).
fn listening_address(line: &str) -> Option<String> {
    let line = without_ansi_escapes(line);
    if !line.contains("listening") {
        return None;
    }
    let (_, after) = line
        .split_once("address=")
        .or_else(|| line.split_once("\"address\":\""))?;
    let address: String = after
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    (!address.is_empty()).then_some(address)
}

/// `line` without terminal colour sequences (`ESC [ … letter`), should a log writer add them.
fn without_ansi_escapes(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// SQLite's write lock on a server's database, held by a test: while it is held, the server
/// commits nothing, so what the test reads under it stays true until it lets go (the crash
/// tests kill the server while holding it).
pub(crate) struct WriteLock(pub(crate) sqlx::SqliteConnection);

impl WriteLock {
    /// Takes the lock (waiting for the server's current transaction, at most 120 s: a hang
    /// guard only, the server's transactions are short).
    pub(crate) async fn take(database: &std::path::Path) -> WriteLock {
        use sqlx::{Connection as _, Executor as _};
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(database)
            .busy_timeout(Duration::from_secs(120));
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .expect("open the database");
        conn.execute("BEGIN IMMEDIATE").await.expect("write lock");
        WriteLock(conn)
    }

    /// Lets go, changing nothing.
    pub(crate) async fn release(mut self) {
        use sqlx::{Connection as _, Executor as _};
        self.0.execute("ROLLBACK").await.expect("release");
        self.0.close().await.expect("close");
    }
}

/// Signs up `email` (owner of a new tenant `tenant_name`) at the server at `base`: the
/// answer (tokens, user, tenant).
pub(crate) async fn signup(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    tenant_name: &str,
) -> serde_json::Value {
    client
        .post(format!("{base}/v1/auth/signup"))
        .json(&serde_json::json!({"email": email, "password": "correct horse battery staple", "tenant_name": tenant_name}))
        .send()
        .await
        .expect("signup")
        .json()
        .await
        .expect("json")
}
