//! Events from transactions: written in the outbox with the change, published by the relay
//! after the commit, never for a rolled-back change, and once per `seq` even when a relay dies
//! between publishing and marking (the next relay republishes; the backplane keeps the seq).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tenantkit_auth::{AccessTokens, JwtConfig, KeySet, SigningKey};
use tenantkit_core::testing::TestDb;
use tenantkit_core::{Backend, Migrations, NewTenant, TenantScope};
use tenantkit_realtime::{ChannelKey, Realtime, Relay, publish_in};

async fn db(backend: Backend) -> Option<TestDb> {
    let migrations = Migrations::new()
        .with(tenantkit_auth::migrations())
        .with(tenantkit_realtime::migrations());
    TestDb::new(backend, &migrations).await
}

fn realtime() -> Realtime {
    let keys = KeySet::new(SigningKey::generate_ed25519().unwrap());
    Realtime::builder(AccessTokens::new(keys, JwtConfig::new("test", "test"))).build()
}

async fn committed_events_survive_a_dead_relay_once_per_seq(test: TestDb) {
    let db = &test.db;
    let (tenant, tx) = db
        .create_tenant(NewTenant {
            name: "Acme".into(),
            slug: None,
        })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let realtime = realtime();
    let mut heard = realtime.backplane().events();

    // Rolled back: no event.
    let mut tx = db.begin(&TenantScope::for_system(tenant.id)).await.unwrap();
    publish_in(
        &mut tx,
        "tenant",
        "project.created",
        &serde_json::json!({"n": 0}),
        false,
    )
    .await
    .unwrap();
    drop(tx); // rolled back
    // Committed while no relay runs (the process died after the commit).
    let mut tx = db.begin(&TenantScope::for_system(tenant.id)).await.unwrap();
    publish_in(
        &mut tx,
        "tenant",
        "project.created",
        &serde_json::json!({"n": 1}),
        false,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // Invalid input never reaches the outbox.
    let mut tx = db.begin(&TenantScope::for_system(tenant.id)).await.unwrap();
    assert!(
        publish_in(&mut tx, "tenant:x", "e", &1, false)
            .await
            .is_err()
    );
    drop(tx); // rolled back

    // A relay that claimed the message and died: its lease runs out (zero here), and the next
    // relay takes it.
    let claimed = db
        .outbox_claim(
            tenantkit_realtime::OUTBOX_TOPIC,
            10,
            Duration::ZERO,
            tenantkit_core::now(),
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "exactly the committed event");
    let relay = Relay::new(db.clone(), realtime.clone());
    assert_eq!(relay.relay_once().await.unwrap(), 1);
    let first = heard.recv().await.unwrap();
    assert_eq!(first.seq, 1);
    assert_eq!(first.event, "project.created");
    assert_eq!(first.channel, ChannelKey::new(tenant.id, "tenant").unwrap());
    // PostgreSQL's jsonb normalises the spacing: compare values.
    let data: serde_json::Value = serde_json::from_str(first.data.get()).unwrap();
    assert_eq!(data, serde_json::json!({"n": 1}));
    // Republished by a relay whose mark was lost: the same seq, nothing new for subscribers.
    let again = realtime
        .publish_message(tenantkit_realtime::Publish {
            channel: first.channel.clone(),
            event: first.event.clone(),
            data: first.data.clone(),
            access_changed: false,
            origin: first.origin,
        })
        .await
        .unwrap();
    assert_eq!(again, 1);
    assert!(heard.try_recv().is_err(), "no second delivery");
    // Marked: nothing left to relay.
    assert_eq!(relay.relay_once().await.unwrap(), 0);
    assert_eq!(
        realtime
            .backplane()
            .replay(&first.channel, None)
            .await
            .unwrap()
            .seq,
        1
    );
}

tenantkit_core::backend_tests!(
    fixture = db;
    committed_events_survive_a_dead_relay_once_per_seq;
);
