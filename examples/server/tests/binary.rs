//! The real `tenantkit-server` binary: starts on a fresh data folder with no setup, answers
//! `/readyz`, stops cleanly on SIGTERM, and refuses unsafe or broken configurations clearly.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Server, wait_exit};

const BINARY: &str = env!("CARGO_BIN_EXE_tenantkit-server");

/// The binary on `data_dir`; a serving one is started with [`Server::start`], which has it
/// listen on a port the kernel picks.
fn server(data_dir: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .env("TENANTKIT_DATA_DIR", data_dir)
        .env("TENANTKIT_BIND", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

#[tokio::test]
async fn starts_on_a_fresh_data_dir_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("fresh").join("data");
    let running = Server::start(server(&data_dir)).await;
    let base = running.base.clone();
    assert!(
        data_dir.join("tenantkit.db").exists(),
        "SQLite file created on first run"
    );

    let health = reqwest::get(format!("{base}/healthz"))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);

    let (status, logs) = running.stop(Duration::from_secs(60));
    assert!(status.success(), "clean exit on SIGTERM, got {status}");
    assert!(logs.contains("SIGTERM received"), "{logs}");
    assert!(logs.contains("stopped"), "{logs}");
    assert!(
        reqwest::get(format!("{base}/healthz")).await.is_err(),
        "port closed after exit"
    );

    // A second start on the same folder reuses the database (migrations are idempotent).
    let again = Server::start(server(&data_dir)).await;
    assert!(again.stop(Duration::from_secs(60)).0.success());
}

/// `--help` shows which environment variables are read, never the secrets they hold.
#[test]
fn help_never_prints_secrets_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = [
        (
            "DATABASE_URL",
            "postgres://app:s3cret-app-pw@db.internal/tk",
        ),
        (
            "DATABASE_MIGRATION_URL",
            "postgres://owner:s3cret-owner-pw@db.internal/tk",
        ),
        (
            "TENANTKIT_SMTP_URL",
            "smtps://mailer:s3cret-smtp-pw@smtp.internal:465",
        ),
        (
            "TENANTKIT_REFRESH_SECRET",
            "s3cret-refresh-secret-0123456789abcdef",
        ),
    ];
    for args in [&["--help"][..], &["help"][..], &["migrate", "--help"][..]] {
        let mut command = server(dir.path());
        command.args(args);
        for (name, value) in secrets {
            command.env(name, value);
        }
        let output = command.output().expect("run");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if args == ["--help"] {
            assert!(text.contains("DATABASE_URL"), "{text}");
        }
        assert!(!text.contains("s3cret"), "{args:?} leaks a secret: {text}");
    }
}

#[test]
fn migrate_subcommand_creates_and_migrates_the_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = server(dir.path())
        .arg("migrate")
        .status()
        .expect("run migrate");
    assert!(status.success());
    assert!(dir.path().join("tenantkit.db").exists());
    // Running it twice is fine.
    assert!(
        server(dir.path())
            .arg("migrate")
            .status()
            .expect("again")
            .success()
    );
}

#[test]
fn broken_configuration_fails_fast_with_a_clear_message_and_no_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = server(dir.path())
        .env("DATABASE_URL", "mysql://root:hunter2@localhost/db")
        .spawn()
        .expect("spawn");
    // It exits by itself (the bound only keeps a hang from stalling the suite).
    assert!(!wait_exit(&mut child, Duration::from_secs(60)).success());
    let out = child.wait_with_output().expect("wait");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("unsupported database URL scheme"), "{text}");
    assert!(
        !text.contains("hunter2"),
        "the password must not be printed: {text}"
    );

    let bad_bind = server(dir.path())
        .env("TENANTKIT_BIND", "not-an-address")
        .output()
        .expect("run");
    assert!(!bad_bind.status.success());
    assert!(
        String::from_utf8_lossy(&bad_bind.stderr).contains("TENANTKIT_BIND")
            || String::from_utf8_lossy(&bad_bind.stderr).contains("--bind")
    );
}

#[tokio::test]
async fn refuses_a_postgres_role_that_bypasses_row_level_security() {
    let Some(admin_url) = tenantkit_core::testing::required_service(
        tenantkit_core::testing::POSTGRES_URL_VAR,
        "PostgreSQL",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let out = server(dir.path())
        .env("DATABASE_URL", &admin_url)
        .output()
        .expect("run");
    assert!(
        !out.status.success(),
        "a superuser connection must be refused"
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("row-level security"), "{text}");
}

#[tokio::test]
async fn serves_on_postgres_as_the_app_role_with_migrations_run_as_the_owner() {
    let Some(test_db) =
        tenantkit_core::testing::TestDb::empty(tenantkit_core::Backend::Postgres).await
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = server(dir.path());
    command
        .env("DATABASE_URL", &test_db.app_url)
        .env("DATABASE_MIGRATION_URL", &test_db.owner_url);
    let running = Server::start(command).await;
    let ready: serde_json::Value = reqwest::get(format!("{}/readyz", running.base))
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["database"], "postgres");
    let (status, logs) = running.stop(Duration::from_secs(60));
    assert!(status.success());
    assert!(
        !logs.contains("tenantkit-test-only"),
        "database passwords are redacted in logs"
    );
}

#[tokio::test]
async fn keys_rotate_adds_a_signing_key_and_keeps_the_old_one_verifying() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jwks = |base: String| async move {
        let body: serde_json::Value = reqwest::get(format!("{base}/.well-known/jwks.json"))
            .await
            .expect("jwks")
            .json()
            .await
            .expect("json");
        body["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["kid"].as_str().expect("kid").to_owned())
            .collect::<Vec<_>>()
    };

    let running = Server::start(server(dir.path())).await;
    let first = jwks(running.base.clone()).await;
    assert_eq!(first.len(), 1, "a development key is created on first run");
    assert!(running.stop(Duration::from_secs(60)).0.success());

    let rotate = server(dir.path())
        .args(["keys", "rotate"])
        .output()
        .expect("rotate");
    assert!(
        rotate.status.success(),
        "{}",
        String::from_utf8_lossy(&rotate.stderr)
    );

    let running = Server::start(server(dir.path())).await;
    let second = jwks(running.base.clone()).await;
    assert_eq!(second.len(), 2, "old key still verifies, new key signs");
    assert!(second.contains(&first[0]));
    assert!(running.stop(Duration::from_secs(60)).0.success());

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for entry in std::fs::read_dir(dir.path().join("keys")).expect("keys dir") {
            let mode = entry
                .expect("entry")
                .metadata()
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o777,
                0o600,
                "private keys are readable by their owner only"
            );
        }
    }
}

#[tokio::test]
async fn tenant_and_user_create_then_log_in_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str], password: Option<&str>| {
        let mut command = server(dir.path());
        command.args(args);
        if let Some(password) = password {
            command.env("TENANTKIT_PASSWORD", password);
        }
        command.stdin(Stdio::null()).output().expect("run")
    };
    let weak = run(
        &[
            "tenant",
            "create",
            "--name",
            "Weak",
            "--owner-email",
            "w@example.com",
        ],
        Some("password1234"),
    );
    assert!(!weak.status.success());
    assert!(
        String::from_utf8_lossy(&weak.stderr).contains("password is too common"),
        "{}",
        String::from_utf8_lossy(&weak.stderr)
    );

    let tenant = run(
        &[
            "tenant",
            "create",
            "--name",
            "Acme Corp",
            "--owner-email",
            "boss@example.com",
        ],
        Some("a sturdy owner passphrase"),
    );
    assert!(
        tenant.status.success(),
        "{}",
        String::from_utf8_lossy(&tenant.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&tenant.stdout).expect("json");
    assert_eq!(created["slug"], "acme-corp");

    // A new address gets an invitation, mailed (to the outbox here), never a ready account:
    // the operator cannot know who holds the mailbox.
    let user = run(
        &[
            "user",
            "create",
            "--email",
            "dev@example.com",
            "--tenant",
            "acme-corp",
            "--role",
            "admin",
        ],
        None,
    );
    assert!(
        user.status.success(),
        "{}",
        String::from_utf8_lossy(&user.stderr)
    );
    let added: serde_json::Value = serde_json::from_slice(&user.stdout).expect("json");
    assert_eq!(
        (added["outcome"].as_str(), added["mailed"].as_bool()),
        (Some("invited"), Some(true)),
        "{added}"
    );
    let outbox = dir.path().join("outbox");
    let mails: Vec<_> = std::fs::read_dir(&outbox)
        .expect("outbox")
        .map(|entry| entry.expect("entry").path())
        .collect();
    assert_eq!(mails.len(), 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |path: &Path| {
            std::fs::metadata(path)
                .expect("metadata")
                .permissions()
                .mode()
        };
        assert_eq!(mode(&mails[0]) & 0o777, 0o600, "it holds a live token");
        assert_eq!(
            mode(&outbox) & 0o077,
            0,
            "only the server's user may list it"
        );
    }
    let mail: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&mails[0]).expect("read")).expect("json");
    let token = mail["body"]
        .as_str()
        .and_then(|body| body.split_once("token="))
        .and_then(|(_, after)| after.split_whitespace().next())
        .expect("a token in the mail")
        .to_owned();
    let missing = run(
        &[
            "user",
            "create",
            "--email",
            "x@example.com",
            "--tenant",
            "no-such-tenant",
        ],
        None,
    );
    assert!(!missing.status.success());

    let running = Server::start(server(dir.path())).await;
    let base = running.base.clone();
    let accepted = reqwest::Client::new()
        .post(format!("{base}/v1/invitations/accept"))
        .json(&serde_json::json!({"token": token, "password": "a sturdy member passphrase"}))
        .send()
        .await
        .expect("accept");
    assert_eq!(accepted.status(), 200);
    let login = reqwest::Client::new()
        .post(format!("{base}/v1/auth/login"))
        .json(&serde_json::json!({"email": "dev@example.com", "password": "a sturdy member passphrase", "tenant": "acme-corp"}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 200);
    let body: serde_json::Value = login.json().await.expect("json");
    assert_eq!(body["memberships"][0]["role"], "admin");
    // The operator's commands went through the same flows as the API: audited.
    let log: serde_json::Value = reqwest::Client::new()
        .get(format!("{base}/v1/audit-log"))
        .bearer_auth(body["access_token"].as_str().expect("token"))
        .send()
        .await
        .expect("audit log")
        .json()
        .await
        .expect("json");
    let actions: Vec<&str> = log["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|entry| entry["action"].as_str().expect("action"))
        .collect();
    assert_eq!(
        actions[..3],
        [
            "tenant.created",
            "invitation.created",
            "invitation.accepted"
        ],
        "{log}"
    );
    assert!(running.stop(Duration::from_secs(60)).0.success());
    let again = run(
        &[
            "user",
            "create",
            "--email",
            "dev@example.com",
            "--tenant",
            "acme-corp",
        ],
        None,
    );
    assert!(!again.status.success(), "already a member");
}

#[tokio::test]
async fn the_binary_knows_client_addresses_and_mails_through_smtp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = server(dir.path());
    command.env("TENANTKIT_RATE_PER_IP", "3");
    let smtp = std::env::var("TENANTKIT_TEST_SMTP_URL").ok();
    if let Some(url) = &smtp {
        command
            .env("TENANTKIT_SMTP_URL", url)
            .env("TENANTKIT_MAIL_FROM", "tk <noreply@tenantkit.test>");
    }
    let running = Server::start(command).await;
    let base = running.base.clone();
    let client = reqwest::Client::new();
    let signup = client
        .post(format!("{base}/v1/auth/signup"))
        .json(&serde_json::json!({"email": "smtp-user@example.com", "password": "correct horse battery staple", "tenant_name": "Mail"}))
        .send()
        .await
        .expect("signup");
    assert_eq!(signup.status(), 201);
    // Per-network login limits count this client (3 per minute): the fourth login is refused.
    for expected in [401, 401, 401, 429] {
        let response = client
            .post(format!("{base}/v1/auth/login"))
            .json(&serde_json::json!({"email": "smtp-user@example.com", "password": "wrong wrong wrong"}))
            .send()
            .await
            .expect("login");
        assert_eq!(response.status(), expected);
    }
    if let (Some(_), Ok(maildir)) = (smtp, std::env::var("TENANTKIT_TEST_SMTP_MAILDIR")) {
        let mut delivered = false;
        for _ in 0..600 {
            delivered = std::fs::read_dir(std::path::Path::new(&maildir).join("new"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    std::fs::read_to_string(e.path())
                        .is_ok_and(|t| t.contains("X-RcptTo: smtp-user@example.com"))
                });
            if delivered {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            delivered,
            "the verification email went through the SMTP relay"
        );
    }
    let (status, audit_ip_logged) = running.stop(Duration::from_secs(60));
    assert!(status.success());
    assert!(
        !audit_ip_logged.contains("correct horse"),
        "no password in logs"
    );
}

#[tokio::test]
async fn audit_verify_names_a_tampered_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let create = server(dir.path())
        .args([
            "tenant",
            "create",
            "--name",
            "Ledger",
            "--owner-email",
            "ledger@example.com",
        ])
        .env("TENANTKIT_PASSWORD", "a sturdy owner passphrase")
        .stdin(Stdio::null())
        .output()
        .expect("create");
    assert!(
        create.status.success(),
        "{}",
        String::from_utf8_lossy(&create.stderr)
    );
    // The signup-like creation wrote no audit entry; make a few through the API.
    let running = Server::start(server(dir.path())).await;
    let base = running.base.clone();
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let login = client
            .post(format!("{base}/v1/auth/login"))
            .json(&serde_json::json!({"email": "ledger@example.com", "password": "a sturdy owner passphrase"}))
            .send()
            .await
            .expect("login");
        assert_eq!(login.status(), 200);
    }
    assert!(running.stop(Duration::from_secs(60)).0.success());

    let verify = || {
        server(dir.path())
            .args(["audit", "verify"])
            .output()
            .expect("verify")
    };
    let ok = verify();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("\"status\":\"ok\""));

    use sqlx::Connection as _;
    let url = format!("sqlite://{}", dir.path().join("tenantkit.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("open the database file");
    sqlx::query("UPDATE audit_log SET ip = '10.9.9.9' WHERE seq = 2")
        .execute(&mut conn)
        .await
        .expect("tamper");
    conn.close().await.expect("close");

    let broken = verify();
    assert_eq!(broken.status.code(), Some(2));
    let report = String::from_utf8_lossy(&broken.stdout);
    assert!(
        report.contains("\"status\":\"broken\"") && report.contains("\"seq\":2"),
        "{report}"
    );
    assert!(report.contains("content was changed"), "{report}");
}
