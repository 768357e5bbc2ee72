//! Out-of-order, duplicated, delayed and concurrent deliveries of a subscription's life (the
//! fake event sequencer) always converge to the state of in-order delivery, and every event
//! is handled exactly once (one row, done), on both backends; over many random
//! interleavings (reproducible: `TENANTKIT_FUZZ_SEED`, scaled by `TENANTKIT_FUZZ_CASES`).

use std::sync::Arc;

use proptest::prelude::*;
use tenantkit_billing::testing::{FakeEvent, SubscriptionLife};
use tenantkit_billing::{
    Billing, EventState, Outcome, PlanBook, Plans, SubscriptionHandler, WebhookVerifier, Worker,
};
use tenantkit_core::testing::{TestDb, TwoTenants, fuzz};
use tenantkit_core::{Backend, Migrations, NewTenant, TenantId, TenantScope};
use time::{Duration, OffsetDateTime};

const SECRET: &str = "whsec_sequencer";

async fn db(backend: Backend) -> Option<TestDb> {
    TestDb::new(
        backend,
        &Migrations::new().with(tenantkit_billing::migrations()),
    )
    .await
}

fn plans() -> Arc<Plans> {
    Arc::new(
        Plans::from_toml(
            "[plans.pro]\nstripe_prices = [\"price_pro\"]\nseats = 25\nstorage_bytes = 5000000\n",
        )
        .expect("plans"),
    )
}

/// What a tenant ends up with: its plan (on the tenant row) and the billing status.
async fn state(
    test_db: &TestDb,
    book: &PlanBook,
    tenant: TenantId,
) -> (String, String, Option<i64>, usize) {
    let mut tx = test_db
        .db
        .begin_read(&TenantScope::for_system(tenant))
        .await
        .expect("tx");
    let plan = tx.tenant().await.expect("tenant").plan.to_string();
    let status = book.status(&mut tx).await.expect("status");
    // A per-event effect: the trial reminder is audited once per event, however often the
    // event was delivered.
    let reminders = tx
        .audit_entries(0, 1000)
        .await
        .expect("audit")
        .iter()
        .filter(|entry| entry.action == "billing.trial_will_end")
        .count();
    tx.commit().await.expect("commit");
    assert_eq!(
        plan, status.plan,
        "the tenant row and the billing status agree"
    );
    (plan, status.status, status.current_period_end, reminders)
}

async fn new_tenant(test_db: &TestDb, n: usize) -> TenantId {
    let (tenant, tx) = test_db
        .db
        .create_tenant(NewTenant {
            name: format!("Billing {n}"),
            slug: None,
        })
        .await
        .expect("tenant");
    tx.commit().await.expect("commit");
    tenant.id
}

/// Delivers `order` (indexes into `events`; repeats are redeliveries), the first `split`
/// before the worker runs and the rest after, `concurrent` of them at once, then drains the
/// worker, advancing its clock past every retry.
async fn play(
    billing: &Billing,
    worker: &Worker,
    events: &[FakeEvent],
    order: &[usize],
    split: usize,
    now: &mut OffsetDateTime,
) {
    let deliver = |event: FakeEvent, at: OffsetDateTime| {
        let billing = billing.clone();
        async move {
            let header = event.signature(SECRET, at.unix_timestamp());
            billing
                .receive_at(Some(header.as_bytes()), &event.body, at)
                .await
                .expect("stored")
        }
    };
    let (first, rest) = order.split_at(split.min(order.len()));
    for chunk in first.chunks(3) {
        // Up to three deliveries at once (concurrent redeliveries of the same event included).
        let at = *now;
        futures_join(chunk.iter().map(|&i| deliver(events[i].clone(), at))).await;
    }
    drain(worker, billing, now, Some(10)).await;
    for &i in rest {
        deliver(events[i].clone(), *now).await;
    }
    drain(worker, billing, now, None).await;
}

async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    let futures: Vec<_> = futures.map(Box::pin).collect();
    for future in futures {
        out.push(future.await);
    }
    out
}

/// Runs the worker, a minute of its clock per idle turn: `Some(n)` for `n` idle turns (the
/// worker runs for a while before the rest arrives), `None` until nothing is pending.
async fn drain(worker: &Worker, billing: &Billing, now: &mut OffsetDateTime, turns: Option<u32>) {
    let mut idle = 0;
    for _ in 0..20_000 {
        match worker.run_once(*now).await.expect("worker") {
            Outcome::Idle => {
                idle += 1;
                if turns.is_some_and(|turns| idle >= turns) {
                    return;
                }
                if turns.is_none() {
                    let open = billing
                        .inbox()
                        .list(Some(EventState::Pending), 1)
                        .await
                        .expect("list");
                    let busy = billing
                        .inbox()
                        .list(Some(EventState::Processing), 1)
                        .await
                        .expect("list");
                    if open.is_empty() && busy.is_empty() {
                        return;
                    }
                }
                *now += Duration::minutes(1);
            }
            Outcome::Dead(id) => panic!("{id} became a dead letter"),
            _ => {}
        }
    }
    panic!("the worker never finished");
}

async fn every_interleaving_converges_to_the_in_order_state(test_db: TestDb) {
    let _world = TwoTenants::create(&test_db.db).await;
    let plans = plans();
    let book = PlanBook::new(plans.clone());
    let billing = Billing::new(
        test_db.db.clone(),
        Some(WebhookVerifier::new(&[SECRET]).expect("verifier")),
    );
    let worker = Worker::new(
        test_db.db.clone(),
        SubscriptionHandler::router(plans.clone()),
    );
    let mut now = tenantkit_core::now();

    let strategy = (
        0u8..3,
        Just(()).prop_perturb(|(), mut rng| {
            // A permutation of 0..7 plus up to four duplicates.
            let mut order: Vec<usize> = (0..7).collect();
            for i in (1..order.len()).rev() {
                let j = (rng.next_u32() as usize) % (i + 1);
                order.swap(i, j);
            }
            for _ in 0..(rng.next_u32() % 5) {
                let at = (rng.next_u32() as usize) % (order.len() + 1);
                let which = (rng.next_u32() as usize) % 7;
                order.insert(at, which);
            }
            order
        }),
        0usize..12,
    );
    let cases = fuzz::samples("billing sequencer", 40, strategy);
    for (n, (kind, order, split)) in cases.into_iter().enumerate() {
        let start = 1_700_000_000 + i64::try_from(n).expect("n") * 100;
        let life = |tenant: TenantId, tag: &str| {
            let tenant = tenant.to_string();
            match kind {
                0 => SubscriptionLife::full_life(&tenant, "price_pro", tag, start),
                1 => SubscriptionLife::recovering_life(&tenant, "price_pro", tag, start),
                _ => SubscriptionLife::trial_life(&tenant, "price_pro", tag, start),
            }
        };
        // In order, once each.
        let reference = new_tenant(&test_db, 2 * n).await;
        let ordered = life(reference, &format!("ref{n}"));
        let count = ordered.events().len();
        let in_order: Vec<usize> = (0..count).collect();
        play(
            &billing,
            &worker,
            ordered.events(),
            &in_order,
            count,
            &mut now,
        )
        .await;
        let expected = state(&test_db, &book, reference).await;
        assert_eq!(
            (expected.0.as_str(), expected.1.as_str(), expected.3),
            match kind {
                0 => ("free", "canceled", 0),
                1 => ("pro", "active", 0),
                _ => ("pro", "active", 1),
            },
            "in order: {expected:?}"
        );
        // Shuffled, duplicated, split around a worker run.
        let tenant = new_tenant(&test_db, 2 * n + 1).await;
        let shuffled = life(tenant, &format!("mix{n}"));
        let order: Vec<usize> = order.into_iter().filter(|&i| i < count).collect();
        let mut complete = order.clone();
        for i in 0..count {
            if !complete.contains(&i) {
                complete.push(i);
            }
        }
        play(
            &billing,
            &worker,
            shuffled.events(),
            &complete,
            split,
            &mut now,
        )
        .await;
        let got = state(&test_db, &book, tenant).await;
        assert_eq!(
            (got.0.as_str(), got.1.as_str(), got.3),
            (expected.0.as_str(), expected.1.as_str(), expected.3),
            "order {complete:?}, split {split}"
        );
        // Every event: one row, handled.
        for event in shuffled.events() {
            let stored = billing
                .inbox()
                .get(&event.id)
                .await
                .expect("get")
                .expect("stored once");
            assert_eq!(stored.state, EventState::Done, "{}", event.id);
        }
    }
}

/// Two events of the same `created` second are ordered by their arrival, not by status rank
/// or event id: `paused` then `active` ends active, the other way round ends paused, and the
/// order the worker handles them in changes nothing. A deletion still wins its second.
async fn events_of_one_second_are_ordered_by_arrival(test_db: TestDb) {
    let plans = plans();
    let book = PlanBook::new(plans.clone());
    let billing = Billing::new(
        test_db.db.clone(),
        Some(WebhookVerifier::new(&[SECRET]).expect("verifier")),
    );
    let worker = Worker::new(
        test_db.db.clone(),
        SubscriptionHandler::router(plans.clone()),
    );
    let mut now = tenantkit_core::now();
    // (statuses at second 2, in the order delivered; worker between them?) -> final status
    let cases: [(&[&str], bool, &str, &str); 6] = [
        (&["paused", "active"], false, "active", "pro"),
        (&["paused", "active"], true, "active", "pro"),
        (&["active", "paused"], false, "paused", "free"),
        (&["active", "paused"], true, "paused", "free"),
        (&["canceled", "active"], false, "canceled", "free"),
        (&["canceled", "active"], true, "canceled", "free"),
    ];
    for (n, (statuses, worker_between, status, plan)) in cases.into_iter().enumerate() {
        let tenant = new_tenant(&test_db, 100 + n).await;
        let start = 1_700_000_000 + i64::try_from(n).expect("n") * 100;
        let mut life =
            SubscriptionLife::new(&tenant.to_string(), "price_pro", &format!("tie{n}"), start)
                .checkout_completed(0)
                .subscription_event("created", 1, "active");
        for status in statuses {
            life = match *status {
                "canceled" => life.deleted(2),
                "paused" => life.subscription_event("paused", 2, "paused"),
                other => life.subscription_event("updated", 2, other),
            };
        }
        let events = life.events();
        let setup: Vec<usize> = vec![0, 1];
        play(&billing, &worker, events, &setup, setup.len(), &mut now).await;
        if worker_between {
            // Each handled as it arrives.
            play(&billing, &worker, events, &[2], 1, &mut now).await;
            play(&billing, &worker, events, &[3], 1, &mut now).await;
        } else {
            // Both waiting, handled in the worker's order (by `created`, then event id).
            play(&billing, &worker, events, &[2, 3], 2, &mut now).await;
        }
        let got = state(&test_db, &book, tenant).await;
        assert_eq!(
            (got.0.as_str(), got.1.as_str()),
            (plan, status),
            "{statuses:?} delivered in that order, worker between: {worker_between}"
        );
        assert_eq!(events[2].created, events[3].created, "one second");
    }
}

tenantkit_core::backend_tests!(
    fixture = db;
    every_interleaving_converges_to_the_in_order_state,
    events_of_one_second_are_ordered_by_arrival
);
