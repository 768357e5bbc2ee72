//! The durable inbox and the worker, on both backends: duplicates are no-ops, handlers run
//! until they succeed or the event becomes a dead letter, a claimed event whose worker died is
//! taken over after its lease, and replay puts an event back in line.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tenantkit_billing::stripe_shared::Invoice;
use tenantkit_billing::testing::SubscriptionLife;
use tenantkit_billing::{
    Billing, BoxFuture, EventHandler, EventRouter, EventState, HandlerError, ObjectHandler,
    Outcome, StoredEvent, WebhookVerifier, Worker, signature::sign,
};
use tenantkit_core::testing::{TenantFixture, TestDb};
use tenantkit_core::{Backend, Migrations, SystemTx, TeamId, TenantId, TenantScope, with_conn};
use time::Duration;

async fn db(backend: Backend) -> Option<TestDb> {
    TestDb::new(
        backend,
        &Migrations::new().with(tenantkit_billing::migrations()),
    )
    .await
}

const SECRET: &str = "whsec_inbox_test";

fn event(id: &str, kind: &str, created: i64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": id, "object": "event", "type": kind, "created": created, "livemode": false,
        "data": {"object": {"id": "sub_1", "object": "subscription"}}
    }))
    .expect("json")
}

fn billing(test_db: &TestDb) -> Billing {
    Billing::new(
        test_db.db.clone(),
        Some(WebhookVerifier::new(&[SECRET]).expect("verifier")),
    )
}

async fn deliver(
    billing: &Billing,
    body: &[u8],
) -> tenantkit_billing::Result<tenantkit_billing::Ingested> {
    let header = sign(SECRET, tenantkit_core::now().unix_timestamp(), body);
    billing.receive(Some(header.as_bytes()), body).await
}

async fn duplicates_are_no_ops(test_db: TestDb) {
    let billing = billing(&test_db);
    let body = event("evt_dup1", "invoice.paid", 1_700_000_000);
    let first = deliver(&billing, &body).await.expect("stored");
    assert!(!first.duplicate);
    // Concurrent redeliveries of the same event: all acknowledged, one row.
    let again = futures_join(&billing, &body).await;
    assert!(again.iter().all(|r| r.duplicate));
    let listed = billing.inbox().list(None, 10).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].event_id, "evt_dup1");
    assert_eq!(listed[0].state, EventState::Pending);
    assert_eq!(listed[0].payload["data"]["object"]["id"], "sub_1");
    // A refused delivery stores nothing.
    let other = event("evt_forged", "invoice.paid", 1_700_000_000);
    let forged = billing
        .receive(Some(b"t=1,v1=00"), &other)
        .await
        .expect_err("refused");
    assert!(matches!(forged, tenantkit_billing::Error::Signature(_)));
    assert!(
        billing
            .inbox()
            .get("evt_forged")
            .await
            .expect("get")
            .is_none()
    );
    // Signed, but not an event.
    for body in [
        &b"[1,2]"[..],
        b"{\"id\":\"x\",\"type\":\"a\",\"created\":1}",
        b"not json",
    ] {
        assert!(matches!(
            deliver(&billing, body).await,
            Err(tenantkit_billing::Error::NotAnEvent(_))
        ));
    }
}

async fn futures_join(billing: &Billing, body: &[u8]) -> Vec<tenantkit_billing::Ingested> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (billing, body) = (billing.clone(), body.to_vec());
        set.spawn(async move { deliver(&billing, &body).await.expect("stored") });
    }
    let mut out = Vec::new();
    while let Some(done) = set.join_next().await {
        out.push(done.expect("task"));
    }
    out
}

#[derive(Debug, Default)]
struct Counting {
    calls: AtomicUsize,
    fail_first: usize,
}

impl EventHandler for Counting {
    fn handle<'a>(
        &'a self,
        _tx: &'a mut SystemTx,
        _event: &'a StoredEvent,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.fail_first {
                Err(format!("failure {n}").into())
            } else {
                Ok(())
            }
        })
    }
}

async fn retries_then_dead_letters_then_replay(test_db: TestDb) {
    let billing = billing(&test_db);
    deliver(&billing, &event("evt_retry", "invoice.paid", 1))
        .await
        .expect("stored");
    deliver(&billing, &event("evt_unknown", "some.future.type", 2))
        .await
        .expect("stored");
    let handler = Arc::new(Counting {
        fail_first: 2,
        ..Counting::default()
    });
    let mut worker = Worker::new(
        test_db.db.clone(),
        EventRouter::new().on("invoice.paid", handler.clone()),
    );
    worker.max_attempts = 3;
    // A second ahead of the deliveries: due-ness never hangs on clock granularity.
    let mut now = tenantkit_core::now() + Duration::seconds(1);
    // Two failures, with growing delays; nothing is due in between.
    assert_eq!(
        worker.run_once(now).await.expect("run"),
        Outcome::Retry("evt_retry".into())
    );
    // The unknown type is acknowledged and done.
    assert_eq!(
        worker.run_once(now).await.expect("run"),
        Outcome::Done("evt_unknown".into())
    );
    assert_eq!(worker.run_once(now).await.expect("run"), Outcome::Idle);
    now += Duration::minutes(10);
    assert_eq!(
        worker.run_once(now).await.expect("run"),
        Outcome::Retry("evt_retry".into())
    );
    now += Duration::minutes(10);
    assert_eq!(
        worker.run_once(now).await.expect("run"),
        Outcome::Done("evt_retry".into())
    );
    assert_eq!(handler.calls.load(Ordering::SeqCst), 3);
    let stored = billing
        .inbox()
        .get("evt_retry")
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(stored.state, EventState::Done);
    assert_eq!(stored.attempts, 3);

    // Always failing: a dead letter after max_attempts, then replayed.
    let failing = Arc::new(Counting {
        fail_first: usize::MAX,
        ..Counting::default()
    });
    let mut worker = Worker::new(
        test_db.db.clone(),
        EventRouter::new().on("invoice.payment_failed", failing.clone()),
    );
    worker.max_attempts = 2;
    deliver(&billing, &event("evt_dead", "invoice.payment_failed", 3))
        .await
        .expect("stored");
    assert_eq!(
        worker.run_once(now).await.expect("run"),
        Outcome::Retry("evt_dead".into())
    );
    now += Duration::minutes(10);
    assert_eq!(
        worker.run_once(now).await.expect("run"),
        Outcome::Dead("evt_dead".into())
    );
    now += Duration::hours(10);
    assert_eq!(worker.run_once(now).await.expect("run"), Outcome::Idle);
    let dead = billing
        .inbox()
        .list(Some(EventState::Dead), 10)
        .await
        .expect("list");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_error.as_deref(), Some("failure 1"));
    assert!(billing.inbox().replay("evt_dead").await.expect("replay"));
    assert!(!billing.inbox().replay("evt_missing").await.expect("replay"));
    assert_eq!(
        worker.run_once(now).await.expect("run"),
        Outcome::Retry("evt_dead".into())
    );
}

/// A handler that never finishes: its worker "dies" holding the event.
#[derive(Debug)]
struct Hang;

impl EventHandler for Hang {
    fn handle<'a>(
        &'a self,
        _tx: &'a mut SystemTx,
        _event: &'a StoredEvent,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(std::future::pending())
    }
}

async fn a_dead_workers_event_is_reclaimed_after_its_lease(test_db: TestDb) {
    let billing = billing(&test_db);
    deliver(&billing, &event("evt_lease", "invoice.paid", 1))
        .await
        .expect("stored");
    let hung = Worker::new(
        test_db.db.clone(),
        EventRouter::new().on("invoice.paid", Arc::new(Hang)),
    );
    let now = tenantkit_core::now() + Duration::seconds(1);
    let task = tokio::spawn(async move { hung.run_once(now).await });
    // Wait until it holds the event (however slow the machine), then kill it.
    let mut claimed = false;
    for _ in 0..6000 {
        let state = billing
            .inbox()
            .get("evt_lease")
            .await
            .expect("get")
            .expect("stored")
            .state;
        if state == EventState::Processing {
            claimed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(claimed, "the first worker claimed the event");
    task.abort();
    let _ = task.await;
    let handler = Arc::new(Counting::default());
    let worker = Worker::new(
        test_db.db.clone(),
        EventRouter::new().on("invoice.paid", handler.clone()),
    );
    // Within the lease nobody else takes it.
    assert_eq!(worker.run_once(now).await.expect("run"), Outcome::Idle);
    let later = now + worker.lease + Duration::seconds(1);
    assert_eq!(
        worker.run_once(later).await.expect("run"),
        Outcome::Done("evt_lease".into())
    );
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1);
    assert_eq!(worker.run_once(later).await.expect("run"), Outcome::Idle);
}

async fn concurrent_deliveries_are_each_answered_after_their_commit(test_db: TestDb) {
    let billing = billing(&test_db);
    // 300 events, each delivered twice at once: they share transactions (group commit).
    let mut set = tokio::task::JoinSet::new();
    for n in 0..600 {
        let billing = billing.clone();
        set.spawn(async move {
            let body = event(
                &format!("evt_many_{}", n % 300),
                "invoice.paid",
                1_700_000_000,
            );
            deliver(&billing, &body).await.expect("stored")
        });
    }
    let mut new = std::collections::HashSet::new();
    let mut duplicates = 0;
    while let Some(done) = set.join_next().await {
        let ingested = done.expect("task");
        if ingested.duplicate {
            duplicates += 1;
        } else {
            assert!(
                new.insert(ingested.event_id),
                "one answer says new per event"
            );
        }
    }
    assert_eq!((new.len(), duplicates), (300, 300));
    // Every answer came after its commit: each event is there.
    let stored = billing.inbox().list(None, 1000).await.expect("list");
    assert_eq!(stored.len(), 300);
}

async fn payloads_any_backend_can_store(test_db: TestDb) {
    let billing = billing(&test_db);
    // U+0000 (in a value and in a key): PostgreSQL's jsonb cannot hold it; stored as U+FFFD.
    let body = br#"{"id":"evt_nul","object":"event","type":"invoice.paid","created":1,"data":{"object":{"id":"in_1","metadata":{"note":"a\u0000b","k\u0000":"v"}}}}"#;
    let stored = deliver(&billing, body).await.expect("stored");
    assert!(!stored.duplicate);
    let event = billing
        .inbox()
        .get("evt_nul")
        .await
        .expect("get")
        .expect("stored");
    let metadata = &event.payload["data"]["object"]["metadata"];
    assert_eq!(metadata["note"], "a\u{FFFD}b");
    assert_eq!(metadata["k\u{FFFD}"], "v");
    // Not JSON (a lone surrogate escape), or a type with a control character: refused.
    for body in [
        &br#"{"id":"evt_sur","object":"event","type":"invoice.paid","created":1,"x":"\ud800"}"#[..],
        br#"{"id":"evt_ctl","object":"event","type":"invoice.\u0000paid","created":1}"#,
    ] {
        let refused = deliver(&billing, body).await.expect_err("refused");
        assert!(
            matches!(refused, tenantkit_billing::Error::NotAnEvent(_)),
            "{refused:?}"
        );
    }
    assert_eq!(billing.inbox().list(None, 10).await.expect("list").len(), 1);
}

/// A typed handler: receives async-stripe's `Invoice`.
#[derive(Debug, Default)]
struct Receipts {
    paid: std::sync::Mutex<Vec<(String, i64)>>,
}

impl ObjectHandler<Invoice> for Receipts {
    fn handle<'a>(
        &'a self,
        _tx: &'a mut SystemTx,
        _event: &'a StoredEvent,
        invoice: Invoice,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let id = invoice.id.map(|id| id.to_string()).unwrap_or_default();
            self.paid
                .lock()
                .expect("lock")
                .push((id, invoice.amount_paid));
            Ok(())
        })
    }
}

async fn typed_handlers_get_async_stripes_objects(test_db: TestDb) {
    let billing = billing(&test_db);
    let life =
        SubscriptionLife::new("tenant", "price_pro", "typed", 1_700_000_000).invoice("paid", 0);
    deliver(&billing, &life.events()[0].body)
        .await
        .expect("stored");
    // An object in an older API shape (fields async-stripe's types require are missing).
    deliver(
        &billing,
        &event("evt_old_shape", "invoice.paid", 1_700_000_001),
    )
    .await
    .expect("stored: the endpoint never parses objects");
    let receipts = Arc::new(Receipts::default());
    let worker = Worker::new(
        test_db.db.clone(),
        EventRouter::new().on_object::<Invoice, _>("invoice.paid", receipts.clone()),
    );
    let now = tenantkit_core::now() + Duration::seconds(1);
    assert_eq!(
        worker.run_once(now).await.expect("run"),
        Outcome::Done("evt_typed_1".into())
    );
    assert_eq!(
        *receipts.paid.lock().expect("lock"),
        vec![("in_typed_0".to_owned(), 2000)]
    );
    assert_eq!(
        worker.run_once(now).await.expect("run"),
        Outcome::Retry("evt_old_shape".into())
    );
    let stored = billing
        .inbox()
        .get("evt_old_shape")
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(stored.state, EventState::Pending);
    let reason = stored.last_error.expect("reason");
    assert!(
        reason.contains("does not parse as async-stripe's Invoice")
            && reason.contains(tenantkit_billing::API_VERSION),
        "{reason}"
    );
    assert_eq!(receipts.paid.lock().expect("lock").len(), 1);
}

/// A handler whose effect is a row of its own (an `evt_effect_<attempt>` inbox row), that
/// can be held mid-handler until released.
#[derive(Debug, Default)]
struct Effect {
    entered: tokio::sync::Notify,
    release: tokio::sync::Notify,
    hold: std::sync::atomic::AtomicBool,
}

impl EventHandler for Effect {
    fn handle<'a>(
        &'a self,
        tx: &'a mut SystemTx,
        event: &'a StoredEvent,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let id = format!("evt_effect_{}", event.attempts);
            tenantkit_core::with_conn!(tx, |c| {
                sqlx::query(
                    "INSERT INTO billing_events (event_id, event_type, created, payload, \
                     next_attempt_at, received_at, state) \
                     VALUES ($1, 'test.effect', 1, '{}', $2, $2, 'done')",
                )
                .bind(&id)
                .bind(tenantkit_core::now())
                .execute(c)
                .await
                .map(drop)
            })?;
            if self.hold.swap(false, Ordering::SeqCst) {
                self.entered.notify_one();
                self.release.notified().await;
            }
            Ok(())
        })
    }
}

/// PostgreSQL (several workers at once): a worker whose handlers outlast its lease loses the
/// event to another worker, and its effects roll back, so they commit exactly once. (On
/// SQLite the single writer serializes the two: the first attempt commits before another
/// worker can claim, and the second finds the event done.)
async fn a_worker_past_its_lease_commits_nothing(test_db: TestDb) {
    let billing = billing(&test_db);
    deliver(&billing, &event("evt_slow", "invoice.paid", 1))
        .await
        .expect("stored");
    let effect = Arc::new(Effect::default());
    effect.hold.store(true, Ordering::SeqCst);
    let mut slow = Worker::new(
        test_db.db.clone(),
        EventRouter::new().on("invoice.paid", effect.clone()),
    );
    slow.lease = Duration::seconds(1);
    let now = tenantkit_core::now() + Duration::seconds(1);
    let first = tokio::spawn(async move { slow.run_once(now).await });
    effect.entered.notified().await;
    // The first attempt is mid-handler; its lease has run out by the second worker's clock.
    let other = Worker::new(
        test_db.db.clone(),
        EventRouter::new().on("invoice.paid", effect.clone()),
    );
    assert_eq!(
        other
            .run_once(now + Duration::seconds(5))
            .await
            .expect("run"),
        Outcome::Done("evt_slow".into())
    );
    effect.release.notify_one();
    assert_eq!(
        first.await.expect("task").expect("run"),
        Outcome::Superseded("evt_slow".into())
    );
    let inbox = billing.inbox();
    assert!(
        inbox.get("evt_effect_1").await.expect("get").is_none(),
        "rolled back"
    );
    assert!(
        inbox.get("evt_effect_2").await.expect("get").is_some(),
        "committed once"
    );
    let slow_event = inbox.get("evt_slow").await.expect("get").expect("stored");
    assert_eq!(
        (slow_event.state, slow_event.attempts),
        (EventState::Done, 2)
    );
}

/// Waits (a hang guard, not a deadline under test) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    tokio::time::timeout(std::time::Duration::from_secs(120), async {
        while !done() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("hang guard: {what} never happened"));
}

/// `Worker::run` handles, retries and dead-letters events on its own, counting each in the
/// stats handle (readable while it runs), and returns once its shutdown future completes.
async fn the_worker_runs_until_shutdown_and_counts(test_db: TestDb) {
    let billing = billing(&test_db);
    let flaky = Arc::new(Counting {
        fail_first: 1,
        ..Counting::default()
    });
    let failing = Arc::new(Counting {
        fail_first: usize::MAX,
        ..Counting::default()
    });
    let mut worker = Worker::new(
        test_db.db.clone(),
        EventRouter::new()
            .on("invoice.paid", flaky.clone())
            .on("invoice.payment_failed", failing.clone()),
    );
    worker.max_attempts = 2;
    worker.backoff = Duration::ZERO; // retries are due at once
    worker.idle_interval = std::time::Duration::from_millis(1);
    let stats = worker.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        worker
            .run(async move {
                let _ = stopped.await;
            })
            .await;
    });
    for (id, kind) in [
        ("evt_run_flaky", "invoice.paid"),
        ("evt_run_dead", "invoice.payment_failed"),
        ("evt_run_unknown", "some.future.type"),
    ] {
        deliver(&billing, &event(id, kind, 1))
            .await
            .expect("stored");
    }
    until("every event settled", || {
        stats.handled() == 2 && stats.dead_lettered() == 1
    })
    .await;
    until("an idle poll", || stats.idle_polls() > 0).await;
    assert_eq!(
        (stats.handled(), stats.retried(), stats.dead_lettered()),
        (2, 2, 1),
        "flaky: retry then done; failing: retry then dead; unknown: done"
    );
    assert_eq!((stats.superseded(), stats.failures()), (0, 0));
    let inbox = billing.inbox();
    let state = |id: &'static str| {
        let inbox = inbox.clone();
        async move { inbox.get(id).await.expect("get").expect("stored").state }
    };
    assert_eq!(state("evt_run_flaky").await, EventState::Done);
    assert_eq!(state("evt_run_dead").await, EventState::Dead);
    stop.send(()).expect("the worker is running");
    tokio::time::timeout(std::time::Duration::from_secs(120), running)
        .await
        .expect("hang guard: run() returned after shutdown")
        .expect("the worker task");
}

/// A shutdown that has already completed stops `run` before it claims anything.
async fn a_completed_shutdown_stops_the_worker_before_any_claim(test_db: TestDb) {
    let billing = billing(&test_db);
    deliver(&billing, &event("evt_not_yet", "invoice.paid", 1))
        .await
        .expect("stored");
    let worker = Worker::new(test_db.db.clone(), EventRouter::new());
    let stats = worker.stats();
    tokio::time::timeout(
        std::time::Duration::from_secs(120),
        worker.run(std::future::ready(())),
    )
    .await
    .expect("hang guard: run() returned");
    assert_eq!(stats.handled() + stats.idle_polls(), 0);
    let stored = billing.inbox().get("evt_not_yet").await.expect("get");
    assert_eq!(stored.expect("stored").state, EventState::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_worker_past_its_lease_commits_nothing() {
    let Some(test_db) = db(Backend::Postgres).await else {
        return;
    };
    a_worker_past_its_lease_commits_nothing(test_db).await;
}

tenantkit_core::backend_tests!(
    fixture = db;
    duplicates_are_no_ops, retries_then_dead_letters_then_replay,
    typed_handlers_get_async_stripes_objects,
    concurrent_deliveries_are_each_answered_after_their_commit, payloads_any_backend_can_store,
    a_dead_workers_event_is_reclaimed_after_its_lease,
    the_worker_runs_until_shutdown_and_counts,
    a_completed_shutdown_stops_the_worker_before_any_claim,
    a_handler_writes_its_tenants_row_through_in_tenant,
    a_replay_in_a_transaction_commits_with_it
);

/// What [`TenantRow`] does with the event's tenant.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Acts in the tenant (`in_tenant`), writes its row, leaves.
    InTenant,
    /// Writes the row straight from the system transaction.
    AsSystem,
    /// Acts in the tenant and writes, but drops the handle without `leave`.
    ForgetsToLeave,
}

/// A handler writing a row of the tenant the event names (a team named after the event).
#[derive(Debug)]
struct TenantRow(Mode);

impl EventHandler for TenantRow {
    fn handle<'a>(
        &'a self,
        tx: &'a mut SystemTx,
        event: &'a StoredEvent,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let named = event.payload["data"]["object"]["metadata"]["tenant_id"]
                .as_str()
                .and_then(|id| id.parse::<TenantId>().ok())
                .ok_or_else(|| HandlerError::permanent("no tenant in the event"))?;
            let tenant = tx.find_tenant(named).await?.ok_or("unknown tenant")?.id;
            let insert = "INSERT INTO teams (id, tenant_id, name, created_at, updated_at) \
                          VALUES ($1, $2, $3, $4, $4)";
            let name = event.event_id.clone();
            match self.0 {
                Mode::AsSystem => {
                    with_conn!(tx, |c| {
                        sqlx::query(insert)
                            .bind(TeamId::new())
                            .bind(tenant)
                            .bind(&name)
                            .bind(tenantkit_core::now())
                            .execute(c)
                            .await
                            .map(drop)
                    })?;
                }
                Mode::InTenant | Mode::ForgetsToLeave => {
                    let mut in_tenant = tx.in_tenant(tenant).await?;
                    let id = in_tenant.tenant_id();
                    with_conn!(&mut in_tenant, |c| {
                        sqlx::query(insert)
                            .bind(TeamId::new())
                            .bind(id)
                            .bind(&name)
                            .bind(tenantkit_core::now())
                            .execute(c)
                            .await
                            .map(drop)
                    })?;
                    if self.0 == Mode::InTenant {
                        in_tenant.leave().await?;
                    }
                }
            }
            Ok(())
        })
    }
}

fn tenant_event(id: &str, tenant: TenantId) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": id, "object": "event", "type": "test.tenant_row", "created": 1,
        "data": {"object": {"metadata": {"tenant_id": tenant.to_string()}}}
    }))
    .expect("json")
}

async fn teams_of(test_db: &TestDb, tenant: TenantId) -> Vec<String> {
    let mut tx = test_db
        .db
        .begin_read(&TenantScope::for_system(tenant))
        .await
        .expect("begin");
    let names = with_conn!(&mut tx, |c| {
        sqlx::query_scalar("SELECT name FROM teams WHERE tenant_id = $1 ORDER BY name")
            .bind(tenant)
            .fetch_all(c)
            .await
    })
    .expect("teams");
    tx.commit().await.expect("commit");
    names
}

/// A webhook handler writes a row of the event's tenant through `SystemTx::in_tenant`,
/// committed with the event's mark; straight from the system transaction, row-level security
/// refuses it on PostgreSQL (the reason for `in_tenant`); a handler that forgets `leave`
/// fails its attempt (retried, nothing written) instead of leaving the event stuck; a
/// permanent error is a dead letter at once.
async fn a_handler_writes_its_tenants_row_through_in_tenant(test_db: TestDb) {
    let billing = billing(&test_db);
    let acme = TenantFixture::create(&test_db.db, "acme").await.tenant.id;
    let worker = |mode| {
        let mut worker = Worker::new(
            test_db.db.clone(),
            EventRouter::new().on("test.tenant_row", Arc::new(TenantRow(mode))),
        );
        worker.max_attempts = 5;
        worker
    };
    let now = tenantkit_core::now() + Duration::seconds(1);

    deliver(&billing, &tenant_event("evt_row_in_tenant", acme))
        .await
        .expect("stored");
    assert_eq!(
        worker(Mode::InTenant).run_once(now).await.expect("run"),
        Outcome::Done("evt_row_in_tenant".into())
    );
    assert_eq!(teams_of(&test_db, acme).await, vec!["evt_row_in_tenant"]);

    deliver(&billing, &tenant_event("evt_row_as_system", acme))
        .await
        .expect("stored");
    let as_system = worker(Mode::AsSystem).run_once(now).await.expect("run");
    if test_db.backend() == Backend::Postgres {
        assert_eq!(as_system, Outcome::Retry("evt_row_as_system".into()));
    } else {
        // No row-level security on SQLite: the handler's own tenant filter is the guard.
        assert_eq!(as_system, Outcome::Done("evt_row_as_system".into()));
    }

    deliver(&billing, &tenant_event("evt_row_forgotten", acme))
        .await
        .expect("stored");
    assert_eq!(
        worker(Mode::ForgetsToLeave)
            .run_once(now)
            .await
            .expect("a failed attempt, not a worker error"),
        Outcome::Retry("evt_row_forgotten".into())
    );
    let stored = billing
        .inbox()
        .get("evt_row_forgotten")
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(stored.state, EventState::Pending);
    let reason = stored.last_error.expect("reason");
    assert!(reason.contains("dropped without leave()"), "{reason}");
    assert!(
        !teams_of(&test_db, acme)
            .await
            .contains(&"evt_row_forgotten".to_owned()),
        "nothing of the failed attempt is written"
    );

    // A permanent failure: a dead letter on its first attempt, its message kept.
    let no_tenant = event("evt_row_no_tenant", "test.tenant_row", 1);
    deliver(&billing, &no_tenant).await.expect("stored");
    assert_eq!(
        worker(Mode::InTenant).run_once(now).await.expect("run"),
        Outcome::Dead("evt_row_no_tenant".into())
    );
    let dead = billing
        .inbox()
        .get("evt_row_no_tenant")
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(
        (dead.state, dead.attempts, dead.last_error.as_deref()),
        (EventState::Dead, 1, Some("no tenant in the event"))
    );
}

/// `Inbox::replay_in`: a replay in the caller's transaction happens exactly when it commits.
async fn a_replay_in_a_transaction_commits_with_it(test_db: TestDb) {
    let billing = billing(&test_db);
    deliver(&billing, &event("evt_replay_in", "test.tenant_row", 1))
        .await
        .expect("stored");
    let worker = Worker::new(
        test_db.db.clone(),
        EventRouter::new().on("test.tenant_row", Arc::new(TenantRow(Mode::InTenant))),
    );
    let now = tenantkit_core::now() + Duration::seconds(1);
    assert_eq!(
        worker.run_once(now).await.expect("run"),
        Outcome::Dead("evt_replay_in".into()),
        "no tenant in it: a permanent failure"
    );
    let state = || async {
        billing
            .inbox()
            .get("evt_replay_in")
            .await
            .expect("get")
            .expect("stored")
            .state
    };
    let mut tx = test_db.db.begin_system().await.expect("begin");
    assert!(
        billing
            .inbox()
            .replay_in(&mut tx, "evt_replay_in")
            .await
            .expect("replay")
    );
    assert!(
        !billing
            .inbox()
            .replay_in(&mut tx, "evt_missing")
            .await
            .expect("replay")
    );
    drop(tx);
    assert_eq!(
        state().await,
        EventState::Dead,
        "rolled back with its transaction"
    );
    let mut tx = test_db.db.begin_system().await.expect("begin");
    assert!(
        billing
            .inbox()
            .replay_in(&mut tx, "evt_replay_in")
            .await
            .expect("replay")
    );
    tx.commit().await.expect("commit");
    assert_eq!(state().await, EventState::Pending, "committed with it");
}
