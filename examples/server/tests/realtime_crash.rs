//! `kill -9` of the real server while its realtime relay holds claimed outbox messages (taken
//! and maybe published, not yet marked delivered), with the Redis backplane, then a restart:
//! every task whose creation was acknowledged appears in its channel's history exactly once,
//! with gap-free sequence numbers. Nothing committed is lost between the commit and the
//! publish; nothing republished after the crash is seen twice.
//!
//! The kill lands while messages are claimed by construction, not by timing: the test takes
//! SQLite's write lock, under which nothing can commit, looks for claimed messages, and kills
//! the process while still holding the lock when it sees some.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{Server, WriteLock};
use tenantkit_core::TenantId;
use tenantkit_realtime::{Backplane as _, ChannelKey, HistoryLimits, RedisBackplane};

const BINARY: &str = env!("CARGO_BIN_EXE_tenantkit-server");
const HISTORY: usize = 5_000;

async fn start(data_dir: &Path, redis: &str) -> Server {
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .env("TENANTKIT_DATA_DIR", data_dir)
        .env("TENANTKIT_REDIS_URL", redis)
        .env("TENANTKIT_REALTIME_HISTORY", HISTORY.to_string())
        .env("TENANTKIT_REALTIME_RELAY_LEASE_SECS", "1")
        .env("RUST_LOG", "warn,tenantkit_server::run=info");
    Server::start(command).await
}

/// The realtime messages claimed by a relay and not delivered, and those still open at all,
/// read under the write lock (so nothing changes until it is released).
async fn look(database: &Path) -> (WriteLock, i64, i64) {
    let mut lock = WriteLock::take(database).await;
    let (claimed, open): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE attempts > 0), count(*) FROM outbox \
         WHERE topic = 'tenantkit.realtime' AND delivered_at IS NULL",
    )
    .fetch_one(&mut lock.0)
    .await
    .expect("outbox");
    (lock, claimed, open)
}

async fn create_task(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    project: &str,
    title: &str,
) -> Option<String> {
    let response = client
        .post(format!("{base}/v1/projects/{project}/tasks"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "title": title }))
        .send()
        .await
        .ok()?;
    if response.status() != 201 {
        return None;
    }
    let body: serde_json::Value = response.json().await.ok()?;
    body["id"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_the_relay_holds_messages_loses_and_repeats_no_event() {
    let Some(redis) =
        tenantkit_core::testing::required_service("TENANTKIT_TEST_REDIS_URL", "Redis")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let database = data.join("tenantkit.db");
    let client = reqwest::Client::new();
    let mut server = start(&data, &redis).await;
    let signup = support::signup(&client, &server.base, "relay@example.com", "Relay").await;
    let tenant: TenantId = signup["tenant"]["id"]
        .as_str()
        .expect("tenant")
        .parse()
        .expect("id");
    let token = signup["access_token"].as_str().expect("token").to_owned();
    let project: serde_json::Value = client
        .post(format!("{}/v1/projects", server.base))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "name": "crash" }))
        .send()
        .await
        .expect("project")
        .json()
        .await
        .expect("json");
    let project = project["id"].as_str().expect("project id").to_owned();

    let mut acknowledged = Vec::new();
    // Messages a killed process held claimed.
    let mut held_by_the_dead = 0;
    for round in 0..4 {
        let base = server.base.clone();
        let acked = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..100 {
            let (client, base, token, project) =
                (client.clone(), base.clone(), token.clone(), project.clone());
            let acked = acked.clone();
            tasks.spawn(async move {
                let id =
                    create_task(&client, &base, &token, &project, &format!("r{round} t{i}")).await;
                if id.is_some() {
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                id
            });
        }
        let mut more = 0;
        loop {
            let (lock, claimed, open) = look(&database).await;
            // Killed once this round's creations are being acknowledged and the relay holds
            // claims (not before: the claims could all be older events).
            if claimed > 0 && acked.load(Ordering::SeqCst) > 0 {
                held_by_the_dead += claimed;
                server.kill9();
                lock.release().await;
                break;
            }
            lock.release().await;
            if open == 0 {
                // The relay caught up between two looks: give it more.
                for _ in 0..10 {
                    more += 1;
                    assert!(more < 5_000, "the relay never held a claim");
                    let title = format!("r{round} more{more}");
                    if let Some(id) = create_task(&client, &base, &token, &project, &title).await {
                        acked.fetch_add(1, Ordering::SeqCst);
                        acknowledged.push(id);
                    }
                }
            }
            // How often to look (not a deadline: nothing depends on it).
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        while let Some(done) = tasks.join_next().await {
            if let Some(id) = done.expect("task") {
                acknowledged.push(id);
            }
        }
        server = start(&data, &redis).await;
    }

    // The last process relays everything left (claims of the dead expire after 1 s).
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (lock, _, open) = look(&database).await;
        lock.release().await;
        if open == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "messages still open after 600 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The channel's history, as any instance reads it from Redis.
    let backplane = RedisBackplane::connect(
        &redis,
        HistoryLimits {
            max_events: HISTORY,
            ..HistoryLimits::default()
        },
    )
    .await
    .expect("redis");
    let channel = ChannelKey::new(tenant, &format!("project:{project}")).expect("channel");
    let replay = backplane.replay(&channel, Some(0)).await.expect("replay");
    assert!(replay.recovered, "the history holds every event");
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for (n, event) in replay.events.iter().enumerate() {
        assert_eq!(event.seq, n as u64 + 1, "gap-free seqs");
        assert_eq!(event.event, "task.created");
        let data: serde_json::Value = serde_json::from_str(event.data.get()).expect("data");
        let id = data["id"].as_str().expect("task id").to_owned();
        if let Some(first) = seen.insert(id.clone(), event.seq) {
            panic!(
                "task {id} was published twice (seq {first} and {})",
                event.seq
            );
        }
    }
    assert!(held_by_the_dead >= 4, "{held_by_the_dead}");
    assert!(
        acknowledged.len() >= 4,
        "every round acknowledged a task before its kill"
    );
    for id in &acknowledged {
        assert!(
            seen.contains_key(id),
            "task {id} was acknowledged, then never published"
        );
    }
    server.kill9();
}
