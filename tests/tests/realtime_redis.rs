//! The Redis backplane against a real `redis-server` (scripts/with-services.sh starts one):
//! two backplanes on one Redis behave as two server instances. The shared conformance suite
//! (tenantkit_e2e::backplane) plus what is Redis's own: stream bounds and key expiry.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use tenantkit_core::TenantId;
use tenantkit_e2e::backplane::{self as suite, message};
use tenantkit_e2e::redis::{self, Reply};
use tenantkit_realtime::{Backplane, ChannelKey, HistoryLimits, RedisBackplane};

async fn pair(limits: HistoryLimits) -> Option<(String, String, RedisBackplane, RedisBackplane)> {
    let url = redis::url()?;
    let prefix = redis::prefix();
    let a = RedisBackplane::connect_with_prefix(&url, limits, &prefix)
        .await
        .unwrap();
    let b = RedisBackplane::connect_with_prefix(&url, limits, &prefix)
        .await
        .unwrap();
    Some((url, prefix, a, b))
}

#[tokio::test]
async fn an_event_published_on_one_instance_reaches_the_other_with_its_seq() {
    let Some((_, _, a, b)) = pair(HistoryLimits::default()).await else {
        return;
    };
    suite::an_event_reaches_every_instance_with_its_seq(&a, &b).await;
}

#[tokio::test]
async fn a_republished_outbox_message_keeps_its_seq_on_every_instance() {
    let Some((_, _, a, b)) = pair(HistoryLimits::default()).await else {
        return;
    };
    suite::a_republished_message_keeps_its_seq(&a, &b).await;
}

#[tokio::test]
async fn concurrent_publishers_on_two_instances_get_distinct_ordered_seqs() {
    let Some((_, _, a, b)) = pair(HistoryLimits {
        max_events: 1000,
        ..HistoryLimits::default()
    })
    .await
    else {
        return;
    };
    suite::concurrent_publishers_get_distinct_ordered_seqs(Arc::new(a), Arc::new(b), 50).await;
}

#[tokio::test]
async fn revocations_cross_instances_and_reach_each_listener_once() {
    let Some((_, _, a, b)) = pair(HistoryLimits::default()).await else {
        return;
    };
    suite::revocations_cross_instances_once(&a.revocation_bus(), &b.revocation_bus()).await;
}

#[tokio::test]
async fn history_is_bounded_by_count_and_every_key_expires() {
    let Some((url, prefix, a, b)) = pair(HistoryLimits {
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
    let replay = b.replay(&channel, Some(2)).await.unwrap();
    assert!(replay.recovered);
    assert_eq!(
        replay.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    let replay = b.replay(&channel, Some(1)).await.unwrap();
    assert!(!replay.recovered && replay.events.is_empty());
    assert_eq!(replay.seq, 5);
    // Beyond the channel (a reset): refetch.
    assert!(!b.replay(&channel, Some(7)).await.unwrap().recovered);
    // The stream holds exactly the bound.
    let log = format!("{prefix}:log:{}:{}", channel.tenant, channel.name);
    assert_eq!(
        redis::command(&url, &["XLEN", &log]).await,
        Reply::Text("3".into())
    );
    // Nothing is kept without a TTL.
    for key in [
        log,
        format!("{prefix}:seq:{}:{}", channel.tenant, channel.name),
    ] {
        let Reply::Text(ttl) = redis::command(&url, &["PTTL", &key]).await else {
            panic!("PTTL answers an integer");
        };
        assert!(ttl.parse::<i64>().unwrap() > 0, "{key} has no TTL");
    }
}

#[tokio::test]
async fn old_events_leave_the_history_by_age() {
    let Some((_, _, a, b)) = pair(HistoryLimits {
        max_age: Duration::from_millis(200),
        ..HistoryLimits::default()
    })
    .await
    else {
        return;
    };
    let channel = ChannelKey::new(TenantId::new(), "tenant").unwrap();
    a.publish(message(&channel, 1, None)).await.unwrap();
    // Waiting out the age bound (not a timing assertion: any wait longer than it gives the
    // same answer).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let replay = b.replay(&channel, Some(0)).await.unwrap();
    assert!(!replay.recovered, "an expired event cannot be replayed");
    assert_eq!(replay.seq, 1, "the counter outlives the history");
    assert_eq!(a.publish(message(&channel, 2, None)).await.unwrap(), 2);
    let replay = b.replay(&channel, Some(1)).await.unwrap();
    assert!(replay.recovered);
    assert_eq!(replay.events.len(), 1);
}
