//! The PostgreSQL backplane against a real server (scripts/with-services.sh starts one): two
//! backplanes on one database behave as two server instances, through the application role
//! (row-level security on, as in production). The shared conformance suite
//! (tenantkit_e2e::backplane) plus what is PostgreSQL's own: the pruner and the catch-up after
//! a lost listener.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use tenantkit_auth::RevocationScope;
use tenantkit_core::testing::TestDb;
use tenantkit_core::{Backend, TenantId};
use tenantkit_e2e::backplane::{self as suite, HANG_GUARD, message, next};
use tenantkit_realtime::{Backplane, ChannelKey, HistoryLimits, PgBackplane};

async fn pair(limits: HistoryLimits) -> Option<(TestDb, PgBackplane, PgBackplane)> {
    let db = TestDb::new(
        Backend::Postgres,
        &tenantkit_server::domain::all_migrations(),
    )
    .await?;
    let a = PgBackplane::connect(&db.app_url, limits).await.unwrap();
    let b = PgBackplane::connect(&db.app_url, limits).await.unwrap();
    Some((db, a, b))
}

#[tokio::test]
async fn an_event_published_on_one_instance_reaches_the_other_with_its_seq() {
    let Some((_db, a, b)) = pair(HistoryLimits::default()).await else {
        return;
    };
    suite::an_event_reaches_every_instance_with_its_seq(&a, &b).await;
}

#[tokio::test]
async fn a_republished_outbox_message_keeps_its_seq_even_when_raced() {
    let Some((_db, a, b)) = pair(HistoryLimits::default()).await else {
        return;
    };
    suite::a_republished_message_keeps_its_seq(&a, &b).await;
}

#[tokio::test]
async fn concurrent_publishers_on_two_instances_get_distinct_ordered_seqs() {
    let Some((_db, a, b)) = pair(HistoryLimits::default()).await else {
        return;
    };
    suite::concurrent_publishers_get_distinct_ordered_seqs(Arc::new(a), Arc::new(b), 25).await;
}

#[tokio::test]
async fn revocations_cross_instances_and_reach_each_listener_once() {
    let Some((_db, a, b)) = pair(HistoryLimits::default()).await else {
        return;
    };
    suite::revocations_cross_instances_once(&a.revocation_bus(), &b.revocation_bus()).await;
}

#[tokio::test]
async fn history_is_bounded_by_the_pruner() {
    let Some((_db, a, b)) = pair(HistoryLimits {
        max_events: 3,
        ..HistoryLimits::default()
    })
    .await
    else {
        return;
    };
    let channel = ChannelKey::new(TenantId::new(), "tenant").unwrap();
    for n in 1..=5 {
        a.publish(message(&channel, n, None)).await.unwrap();
    }
    // Beyond the bound even before pruning: a replay never reaches further back than it.
    assert!(!b.replay(&channel, Some(1)).await.unwrap().recovered);
    assert_eq!(a.prune().await.unwrap(), 2);
    assert_eq!(a.prune().await.unwrap(), 0);
    let replay = b.replay(&channel, Some(2)).await.unwrap();
    assert!(replay.recovered);
    assert_eq!(
        replay.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    assert!(!b.replay(&channel, Some(1)).await.unwrap().recovered);
}

#[tokio::test]
async fn a_lost_listener_replays_what_it_missed_from_the_table() {
    let Some((db, a, b)) = pair(HistoryLimits::default()).await else {
        return;
    };
    let channel = ChannelKey::new(TenantId::new(), "tenant").unwrap();
    let mut on_b = b.events();
    let mut revocations = b.revocation_bus().subscribe();
    assert_eq!(a.publish(message(&channel, 1, None)).await.unwrap(), 1);
    assert_eq!(next(&mut on_b).await.seq, 1);
    // Kill both listening connections of this database (as the cluster's superuser, who sees
    // every session's last statement).
    let owner = sqlx::PgPool::connect(&db.owner_url).await.unwrap();
    let name: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(&owner)
        .await
        .unwrap();
    let superuser = sqlx::PgPool::connect(&std::env::var("TENANTKIT_TEST_POSTGRES_URL").unwrap())
        .await
        .unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND query LIKE 'LISTEN%'",
    )
    .bind(&name)
    .fetch_all(&superuser)
    .await
    .unwrap();
    assert_eq!(killed, [true, true]);
    // Published while B's listener may be gone: its notifications may be lost.
    for n in 2..=4 {
        assert_eq!(
            a.publish(message(&channel, n, None)).await.unwrap(),
            u64::from(n)
        );
    }
    // B hands out each of them once, in order (from notifications or the catch-up).
    for expected in 2..=4 {
        assert_eq!(next(&mut on_b).await.seq, expected);
    }
    let notice = tokio::time::timeout(HANG_GUARD, revocations.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(notice.scope, RevocationScope::Missed);
    // And it listens again.
    assert_eq!(a.publish(message(&channel, 5, None)).await.unwrap(), 5);
    assert_eq!(next(&mut on_b).await.seq, 5);
    owner.close().await;
    superuser.close().await;
}
