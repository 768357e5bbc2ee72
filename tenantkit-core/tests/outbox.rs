//! `after_commit`, the transactional outbox and its relay API, and `Database::listen`, on both
//! backends. No test waits for time to pass: leases are crossed with the `now` parameter, and
//! timeouts are hang guards only.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tenantkit_core::testing::{TestDb, TwoTenants};
use tenantkit_core::{
    Backend, Error, Migrations, Notification, OUTBOX_CHANNEL, TenantScope, with_conn,
};

/// A generous bound on waiting for a notification that must come: a hang guard, not a
/// measurement.
const HANG_GUARD: Duration = Duration::from_secs(30);
const LEASE: Duration = Duration::from_secs(60);

async fn world(backend: Backend) -> Option<(TestDb, TwoTenants)> {
    let test_db = TestDb::new(backend, &Migrations::new()).await?;
    let world = TwoTenants::create(&test_db.db).await;
    Some((test_db, world))
}

/// What hooks recorded, in the order they ran.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn hook(&self, name: &str) -> impl FnOnce() + Send + 'static {
        let log = self.clone();
        let name = name.to_owned();
        move || log.0.lock().expect("log").push(name)
    }

    fn entries(&self) -> Vec<String> {
        self.0.lock().expect("log").clone()
    }
}

/// A table whose foreign key is checked at `COMMIT` (deferred), so that a commit itself
/// fails on both backends while every statement succeeded.
async fn create_commit_check_table(test_db: &TestDb) {
    let create = "CREATE TABLE commit_check (id integer PRIMARY KEY, \
                  parent integer REFERENCES commit_check (id) DEFERRABLE INITIALLY DEFERRED)";
    match test_db.backend() {
        Backend::Sqlite => test_db.execute_as_owner(create).await,
        _ => {
            test_db
                .execute_as_owner(&format!(
                    "{create}; GRANT SELECT, INSERT ON commit_check TO tenantkit_app"
                ))
                .await
        }
    }
}

async fn after_commit_runs_once_in_order_after_a_commit((test_db, world): (TestDb, TwoTenants)) {
    let db = &test_db.db;
    let log = Log::default();

    let mut tx = db.begin(&world.a.scope()).await.expect("begin");
    tx.after_commit(log.hook("tenant 1"));
    tx.after_commit(log.hook("tenant 2"));
    tx.outbox("t", &1).await.expect("outbox");
    tx.after_commit(log.hook("tenant 3"));
    assert!(log.entries().is_empty(), "a hook ran before the commit");
    tx.commit().await.expect("commit");
    assert_eq!(log.entries(), ["tenant 1", "tenant 2", "tenant 3"]);

    let mut tx = db.begin_user(world.a.owner.id).await.expect("begin user");
    tx.after_commit(log.hook("user"));
    tx.commit().await.expect("commit user");
    let mut tx = db.begin_system().await.expect("begin system");
    tx.after_commit(log.hook("system"));
    tx.commit().await.expect("commit system");
    let mut tx = db.begin_system_statement().await.expect("begin statement");
    tx.after_commit(log.hook("statement"));
    tx.commit().await.expect("commit statement");
    // A read has nothing to roll back: its hooks run when its commit returns.
    let mut tx = db.begin_read(&world.b.scope()).await.expect("begin read");
    tx.after_commit(log.hook("read"));
    tx.commit().await.expect("commit read");
    assert_eq!(
        log.entries(),
        [
            "tenant 1",
            "tenant 2",
            "tenant 3",
            "user",
            "system",
            "statement",
            "read"
        ]
    );

    // A panicking hook neither undoes the commit nor stops the hooks after it.
    let mut tx = db.begin(&world.a.scope()).await.expect("begin");
    tx.after_commit(|| panic!("a hook that panics"));
    tx.after_commit(log.hook("after the panic"));
    tx.commit().await.expect("the commit stands");
    assert_eq!(
        log.entries().last().map(String::as_str),
        Some("after the panic")
    );
}

async fn after_commit_never_runs_without_a_commit((test_db, world): (TestDb, TwoTenants)) {
    create_commit_check_table(&test_db).await;
    let db = &test_db.db;
    let log = Log::default();

    // Dropped uncommitted (the rollback).
    let mut tx = db.begin(&world.a.scope()).await.expect("begin");
    tx.after_commit(log.hook("dropped"));
    drop(tx);
    let mut tx = db.begin_system().await.expect("begin system");
    tx.after_commit(log.hook("dropped system"));
    drop(tx);

    // Poisoned by a failed statement: the commit refuses.
    let mut tx = db.begin(&world.a.scope()).await.expect("begin");
    tx.after_commit(log.hook("poisoned"));
    let failed = with_conn!(&mut tx, |c| {
        sqlx::query("SELECT * FROM no_such_table")
            .execute(c)
            .await
            .map(drop)
    });
    assert!(failed.is_err());
    assert!(matches!(tx.commit().await, Err(Error::Aborted)));

    // The COMMIT itself fails (a deferred foreign key), every statement having succeeded.
    let mut tx = db.begin_system().await.expect("begin system");
    with_conn!(&mut tx, |c| {
        sqlx::query("INSERT INTO commit_check (id, parent) VALUES (1, 999)")
            .execute(c)
            .await
            .map(drop)
    })
    .expect("the insert itself succeeds");
    tx.after_commit(log.hook("failed commit"));
    let result = tx.commit().await;
    assert!(
        result.is_err() && !matches!(result, Err(Error::Aborted)),
        "the deferred check fails the commit: {result:?}"
    );

    // Concurrent writers, every other one failing at COMMIT: on SQLite, commits with writers
    // waiting begin the next transaction in the same round trip; only the COMMIT's own result
    // decides whether a transaction's hooks run.
    let mut tasks = Vec::new();
    for i in 0..16_i32 {
        let db = db.clone();
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = db.begin_system().await.expect("begin system");
            let parent = if i % 2 == 0 { None } else { Some(1_000 + i) };
            with_conn!(&mut tx, |c| {
                sqlx::query("INSERT INTO commit_check (id, parent) VALUES ($1, $2)")
                    .bind(100 + i)
                    .bind(parent)
                    .execute(c)
                    .await
                    .map(drop)
            })
            .expect("insert");
            tx.after_commit(log.hook(&format!("concurrent {i}")));
            (i, tx.commit().await.is_ok())
        }));
    }
    let mut committed = BTreeSet::new();
    for task in tasks {
        let (i, ok) = task.await.expect("task");
        assert_eq!(ok, i % 2 == 0, "writer {i}: commit result");
        if ok {
            committed.insert(format!("concurrent {i}"));
        }
    }

    // Whatever ran later (the rollbacks' tasks included), only the successful commits' hooks
    // ran, each once.
    let mut tx = db.begin(&world.b.scope()).await.expect("begin");
    tx.after_commit(log.hook("marker"));
    tx.commit().await.expect("commit");
    let entries = log.entries();
    let ran: BTreeSet<String> = entries
        .iter()
        .filter(|e| e.as_str() != "marker")
        .cloned()
        .collect();
    assert_eq!(ran, committed, "hooks that ran: {entries:?}");
    assert_eq!(
        entries.len(),
        committed.len() + 1,
        "a hook ran twice: {entries:?}"
    );
}

async fn outbox_rows_of_a_rolled_back_transaction_never_appear(
    (test_db, world): (TestDb, TwoTenants),
) {
    let db = &test_db.db;
    let mut tx = db.begin(&world.a.scope()).await.expect("begin");
    tx.outbox("rb", &"dropped").await.expect("outbox");
    drop(tx);
    let mut tx = db.begin_system().await.expect("begin system");
    tx.outbox("rb", &"dropped system").await.expect("outbox");
    drop(tx);
    let mut tx = db.begin(&world.a.scope()).await.expect("begin");
    tx.outbox("rb", &"poisoned").await.expect("outbox");
    let _ = with_conn!(&mut tx, |c| {
        sqlx::query("SELECT * FROM no_such_table")
            .execute(c)
            .await
            .map(drop)
    });
    assert!(tx.commit().await.is_err());
    // A read-only transaction cannot write one (and is poisoned by trying).
    let mut tx = db.begin_read(&world.a.scope()).await.expect("begin read");
    assert!(tx.outbox("rb", &"read only").await.is_err());
    assert!(tx.commit().await.is_err());

    let mut tx = db.begin(&world.a.scope()).await.expect("begin");
    let committed = tx.outbox("rb", &"committed").await.expect("outbox");
    tx.commit().await.expect("commit");

    let claimed = db
        .outbox_claim("rb", 100, LEASE, tenantkit_core::now())
        .await
        .expect("claim");
    let payloads: Vec<(i64, String)> = claimed
        .iter()
        .map(|m| (m.id, m.decode().expect("decode")))
        .collect();
    assert_eq!(payloads, [(committed, "committed".to_owned())]);
}

async fn outbox_survives_a_kill_between_commit_and_relay((test_db, world): (TestDb, TwoTenants)) {
    let db = &test_db.db;
    let mut tx = db.begin(&world.a.scope()).await.expect("begin a");
    let a1 = tx
        .outbox("jobs", &serde_json::json!({"n": 1}))
        .await
        .expect("outbox");
    let a2 = tx
        .outbox("jobs", &serde_json::json!({"n": 2}))
        .await
        .expect("outbox");
    tx.outbox("other", &serde_json::json!({"n": 0}))
        .await
        .expect("outbox");
    tx.commit().await.expect("commit a");
    let mut tx = db.begin(&world.b.scope()).await.expect("begin b");
    let b1 = tx
        .outbox("jobs", &serde_json::json!({"n": 3}))
        .await
        .expect("outbox");
    tx.commit().await.expect("commit b");
    let mut tx = db.begin_system().await.expect("begin system");
    let s1 = tx
        .outbox("jobs", &serde_json::json!({"n": 4}))
        .await
        .expect("outbox");
    tx.commit().await.expect("commit system");

    let now = tenantkit_core::now();
    // The relay of one instance claims them, then dies before marking anything.
    let crashed = test_db.reconnect().await.expect("relay instance");
    let first = crashed
        .outbox_claim("jobs", 100, LEASE, now)
        .await
        .expect("claim");
    let seen: Vec<_> = first
        .iter()
        .map(|m| (m.id, m.tenant_id, m.topic.as_str(), m.attempts))
        .collect();
    assert_eq!(
        seen,
        [
            (a1, Some(world.a.tenant.id), "jobs", 1),
            (a2, Some(world.a.tenant.id), "jobs", 1),
            (b1, Some(world.b.tenant.id), "jobs", 1),
            (s1, None, "jobs", 1),
        ]
    );
    assert_eq!(
        first[0].decode::<serde_json::Value>().expect("decode"),
        serde_json::json!({"n": 1})
    );
    crashed.close().await;
    drop(crashed);

    // While the lease runs, nobody gets them.
    let relay = test_db.reconnect().await.expect("restarted relay");
    let during = now + time::Duration::seconds(59);
    assert!(
        relay
            .outbox_claim("jobs", 100, LEASE, during)
            .await
            .expect("claim")
            .is_empty()
    );
    // After it, they are claimed again, in order.
    let after = now + time::Duration::seconds(61);
    let again = relay
        .outbox_claim("jobs", 2, LEASE, after)
        .await
        .expect("claim");
    let ids: Vec<(i64, i32)> = again.iter().map(|m| (m.id, m.attempts)).collect();
    assert_eq!(ids, [(a1, 2), (a2, 2)], "oldest first, within the limit");
    let rest = relay
        .outbox_claim("jobs", 100, LEASE, after)
        .await
        .expect("claim");
    let ids: Vec<i64> = rest.iter().map(|m| m.id).collect();
    assert_eq!(ids, [b1, s1]);

    // Delivered: never claimed again, not even long after.
    assert_eq!(
        relay
            .outbox_delivered(&[a1, a2, b1, s1])
            .await
            .expect("mark"),
        4
    );
    assert_eq!(relay.outbox_delivered(&[a1]).await.expect("mark again"), 0);
    let much_later = now + time::Duration::days(365);
    assert!(
        relay
            .outbox_claim("jobs", 100, LEASE, much_later)
            .await
            .expect("claim")
            .is_empty()
    );

    // The other topic was never touched by the "jobs" relay; pruning keeps it (undelivered)
    // and deletes the delivered ones once past the retention.
    assert_eq!(
        relay
            .outbox_prune(now - time::Duration::hours(1))
            .await
            .expect("prune"),
        0
    );
    assert_eq!(relay.outbox_prune(much_later).await.expect("prune"), 4);
    let other = relay
        .outbox_claim("other", 100, LEASE, much_later)
        .await
        .expect("claim");
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].attempts, 1);
}

async fn concurrent_claimers_never_share_a_message((test_db, world): (TestDb, TwoTenants)) {
    let db = &test_db.db;
    let mut written = BTreeSet::new();
    for chunk in 0..5 {
        let mut tx = db.begin(&world.a.scope()).await.expect("begin");
        for n in 0..10 {
            written.insert(
                tx.outbox("fanout", &(chunk * 10 + n))
                    .await
                    .expect("outbox"),
            );
        }
        tx.commit().await.expect("commit");
    }
    let now = tenantkit_core::now();
    let mut claimers = Vec::new();
    for _ in 0..4 {
        let instance = test_db.reconnect().await.expect("instance");
        claimers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = instance
                    .outbox_claim("fanout", 3, LEASE, now)
                    .await
                    .expect("claim");
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|m| m.id));
            }
        }));
    }
    let mut claimed = Vec::new();
    for claimer in claimers {
        claimed.extend(claimer.await.expect("claimer"));
    }
    let unique: BTreeSet<i64> = claimed.iter().copied().collect();
    assert_eq!(
        unique.len(),
        claimed.len(),
        "a message was claimed twice within its lease"
    );
    assert_eq!(unique, written, "every message was claimed");
}

async fn a_tenant_cannot_touch_another_tenants_outbox((test_db, world): (TestDb, TwoTenants)) {
    let db = &test_db.db;
    let mut tx = db.begin(&world.b.scope()).await.expect("begin b");
    let b1 = tx.outbox("rls", &"b").await.expect("outbox");
    tx.commit().await.expect("commit b");
    if test_db.backend() != Backend::Postgres {
        return; // Row-level security is PostgreSQL's; SQLite has the API's tenant alone.
    }
    let b = world.b.tenant.id;
    let insert_as = async |scope: &TenantScope, tenant: Option<tenantkit_core::TenantId>| {
        let mut tx = db.begin(scope).await.expect("begin");
        with_conn!(&mut tx, |c| {
            sqlx::query(
                "INSERT INTO outbox (tenant_id, topic, payload, created_at, available_at) \
                 VALUES ($1, 'rls', '\"forged\"', now(), now())",
            )
            .bind(tenant)
            .execute(&mut *c)
            .await
            .map(drop)
        })
    };
    // A's transaction, the app's tenant filter deliberately left out: RLS refuses B's tenant
    // and a system message.
    let forged = insert_as(&world.a.scope(), Some(b)).await;
    assert!(forged.is_err(), "A wrote a message as B: {forged:?}");
    let forged = insert_as(&world.a.scope(), None).await;
    assert!(forged.is_err(), "A wrote a system message: {forged:?}");

    // A sees none of B's messages, and B cannot change or delete its own queued ones.
    for (scope, statement) in [
        (
            world.a.scope(),
            "SELECT count(*) FROM outbox WHERE topic = 'rls'",
        ),
        (
            world.b.scope(),
            "WITH changed AS (UPDATE outbox SET delivered_at = now() RETURNING 1) \
             SELECT count(*) FROM changed",
        ),
        (
            world.b.scope(),
            "WITH gone AS (DELETE FROM outbox RETURNING 1) SELECT count(*) FROM gone",
        ),
    ] {
        let mut tx = db.begin(&scope).await.expect("begin");
        let count: i64 = with_conn!(&mut tx, |c| {
            sqlx::query_scalar(statement).fetch_one(&mut *c).await
        })
        .expect(statement);
        assert_eq!(count, 0, "{statement}");
        tx.commit().await.expect("commit");
    }
    let claimed = db
        .outbox_claim("rls", 100, LEASE, tenantkit_core::now())
        .await
        .expect("claim");
    let ids: Vec<(i64, Option<tenantkit_core::TenantId>)> =
        claimed.iter().map(|m| (m.id, m.tenant_id)).collect();
    assert_eq!(
        ids,
        [(b1, Some(b))],
        "only B's own message exists, unchanged"
    );
}

async fn next_message(listener: &mut tenantkit_core::Listener) -> Notification {
    tokio::time::timeout(HANG_GUARD, listener.recv())
        .await
        .expect("hang guard: no notification came")
        .expect("listen")
}

async fn a_committed_insert_wakes_a_listener((test_db, world): (TestDb, TwoTenants)) {
    let db = &test_db.db;
    let mut listener = db.listen(OUTBOX_CHANNEL).await.expect("listen");
    let mut tx = db.begin(&world.a.scope()).await.expect("begin");
    tx.outbox("wake", &1).await.expect("outbox");
    tx.outbox("wake", &2).await.expect("outbox");
    tx.commit().await.expect("commit");
    assert_eq!(
        next_message(&mut listener).await,
        Notification::Message {
            channel: OUTBOX_CHANNEL.to_owned(),
            payload: "wake".to_owned()
        }
    );
    // One notification per topic and transaction: the next one is the next transaction's.
    let mut tx = db.begin_system().await.expect("begin system");
    tx.outbox("wake-system", &3).await.expect("outbox");
    tx.commit().await.expect("commit");
    assert_eq!(
        next_message(&mut listener).await,
        Notification::Message {
            channel: OUTBOX_CHANNEL.to_owned(),
            payload: "wake-system".to_owned()
        }
    );
}

async fn a_rolled_back_insert_notifies_nobody((test_db, world): (TestDb, TwoTenants)) {
    let db = &test_db.db;
    let mut listener = db.listen(OUTBOX_CHANNEL).await.expect("listen");
    let mut tx = db.begin(&world.a.scope()).await.expect("begin");
    tx.outbox("rolled-back", &1).await.expect("outbox");
    drop(tx);
    let mut tx = db.begin(&world.a.scope()).await.expect("begin");
    tx.outbox("poisoned", &1).await.expect("outbox");
    let _ = with_conn!(&mut tx, |c| {
        sqlx::query("SELECT * FROM no_such_table")
            .execute(c)
            .await
            .map(drop)
    });
    assert!(tx.commit().await.is_err());
    // The marker, committed after both: the first notification must be its.
    let mut tx = db.begin(&world.b.scope()).await.expect("begin");
    tx.outbox("marker", &1).await.expect("outbox");
    tx.commit().await.expect("commit");
    assert_eq!(
        next_message(&mut listener).await,
        Notification::Message {
            channel: OUTBOX_CHANNEL.to_owned(),
            payload: "marker".to_owned()
        }
    );
}

tenantkit_core::backend_tests!(
    fixture = world;
    after_commit_runs_once_in_order_after_a_commit,
    after_commit_never_runs_without_a_commit,
    outbox_rows_of_a_rolled_back_transaction_never_appear,
    outbox_survives_a_kill_between_commit_and_relay,
    concurrent_claimers_never_share_a_message,
    a_tenant_cannot_touch_another_tenants_outbox,
    a_committed_insert_wakes_a_listener,
    a_rolled_back_insert_notifies_nobody,
);
