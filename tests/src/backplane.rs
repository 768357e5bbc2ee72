//! The conformance suite of networked backplanes: what every [`Backplane`] that crosses
//! instances must do, run by the Redis and PostgreSQL tests over two instances (`a`, `b`) on
//! one server. Every wait is a hang guard.

#![allow(clippy::missing_panics_doc)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tenantkit_auth::{Revocation, RevocationBus, RevocationScope};
use tenantkit_core::{SessionId, TenantId, UserId};
use tenantkit_realtime::{Backplane, ChannelKey, Event, Publish};
use tokio::sync::broadcast;

/// Only a guard against a hang: every wait ends as soon as what it waits for happens.
pub const HANG_GUARD: Duration = Duration::from_secs(30);

/// Event `n` on `channel` (`access_changed` on even `n`), from outbox message `origin`.
pub fn message(channel: &ChannelKey, n: u32, origin: Option<i64>) -> Publish {
    Publish {
        channel: channel.clone(),
        event: "thing.happened".into(),
        data: RawValue::from_string(format!("{{\"n\":{n}}}")).expect("json"),
        access_changed: n.is_multiple_of(2),
        origin,
    }
}

/// The next event an instance hears.
pub async fn next(events: &mut broadcast::Receiver<Arc<Event>>) -> Arc<Event> {
    tokio::time::timeout(HANG_GUARD, events.recv())
        .await
        .expect("an event within the hang guard")
        .expect("an event")
}

/// Publishes alternate between the instances; both hear every event with the seq the
/// publisher got, in order, per channel; another tenant's channel of the same name counts on
/// its own; either instance replays the history.
pub async fn an_event_reaches_every_instance_with_its_seq(a: &dyn Backplane, b: &dyn Backplane) {
    let channel = ChannelKey::new(TenantId::new(), "project:p1").expect("channel");
    let other = ChannelKey::new(TenantId::new(), "project:p1").expect("channel");
    let mut on_a = a.events();
    let mut on_b = b.events();
    for n in 1..=3u32 {
        let from = if n.is_multiple_of(2) { a } else { b };
        assert_eq!(
            from.publish(message(&channel, n, None))
                .await
                .expect("publish"),
            u64::from(n)
        );
    }
    assert_eq!(
        a.publish(message(&other, 9, None)).await.expect("publish"),
        1
    );
    for events in [&mut on_a, &mut on_b] {
        for n in 1..=3u64 {
            let event = next(events).await;
            assert_eq!((&event.channel, event.seq), (&channel, n));
            assert_eq!(event.event, "thing.happened");
            assert_eq!(event.data.get(), format!("{{\"n\":{n}}}"));
            assert_eq!(event.access_changed, n.is_multiple_of(2));
            let frame: serde_json::Value = serde_json::from_str(event.frame()).expect("frame");
            assert_eq!(
                (frame["seq"].as_u64(), frame["channel"].as_str()),
                (Some(n), Some("project:p1"))
            );
        }
        let event = next(events).await;
        assert_eq!((event.channel.tenant, event.seq), (other.tenant, 1));
    }
    let replay = b.replay(&channel, Some(1)).await.expect("replay");
    assert!(replay.recovered);
    assert_eq!(replay.seq, 3);
    assert_eq!(
        replay.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(replay.events[1].data.get(), "{\"n\":3}");
    let fresh = ChannelKey::new(channel.tenant, "tenant").expect("channel");
    let replay = a.replay(&fresh, Some(0)).await.expect("replay");
    assert_eq!((replay.seq, replay.recovered), (0, true));
    // A since beyond the channel (a reset): refetch.
    assert!(!a.replay(&channel, Some(9)).await.expect("replay").recovered);
}

/// An outbox message republished (by another instance's relay after a crash, or by two at
/// once) keeps its seq and is heard once.
pub async fn a_republished_message_keeps_its_seq(a: &dyn Backplane, b: &dyn Backplane) {
    let channel = ChannelKey::new(TenantId::new(), "tenant").expect("channel");
    let mut on_b = b.events();
    assert_eq!(
        a.publish(message(&channel, 1, Some(41)))
            .await
            .expect("publish"),
        1
    );
    assert_eq!(
        b.publish(message(&channel, 1, Some(41)))
            .await
            .expect("publish"),
        1
    );
    let (x, y) = tokio::join!(
        a.publish(message(&channel, 2, Some(42))),
        b.publish(message(&channel, 2, Some(42)))
    );
    assert_eq!((x.expect("publish"), y.expect("publish")), (2, 2));
    assert_eq!(
        a.publish(message(&channel, 3, None))
            .await
            .expect("publish"),
        3
    );
    let seqs = [
        next(&mut on_b).await.seq,
        next(&mut on_b).await.seq,
        next(&mut on_b).await.seq,
    ];
    assert_eq!(seqs, [1, 2, 3], "no duplicate was published");
    assert_eq!(b.replay(&channel, None).await.expect("replay").seq, 3);
}

/// Four publishers (two per instance) on one channel: distinct seqs 1..=4n, heard in order.
pub async fn concurrent_publishers_get_distinct_ordered_seqs(
    a: Arc<dyn Backplane>,
    b: Arc<dyn Backplane>,
    each: u32,
) {
    let channel = ChannelKey::new(TenantId::new(), "tenant").expect("channel");
    let mut on_b = b.events();
    // The instances live until every event is heard (the last handle stops a backplane).
    let _alive = (a.clone(), b.clone());
    let mut tasks = Vec::new();
    for (i, bp) in [a.clone(), b.clone(), a, b].into_iter().enumerate() {
        let channel = channel.clone();
        let i = u32::try_from(i).expect("i");
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for n in 0..each {
                seqs.push(
                    bp.publish(message(&channel, i * 1000 + n, None))
                        .await
                        .expect("publish"),
                );
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    all.sort_unstable();
    let total = u64::from(each) * 4;
    assert_eq!(all, (1..=total).collect::<Vec<u64>>());
    for expected in 1..=total {
        assert_eq!(next(&mut on_b).await.seq, expected, "in seq order");
    }
}

/// A revocation published on one instance's bus reaches the other's subscribers and its
/// own, each once; one listing more sessions than a message holds still crosses, by scope.
pub async fn revocations_cross_instances_once(
    bus_a: &Arc<dyn RevocationBus>,
    bus_b: &Arc<dyn RevocationBus>,
) {
    let mut heard_a = bus_a.subscribe();
    let mut heard_b = bus_b.subscribe();
    let session = SessionId::new();
    bus_a.publish(Revocation::new(
        RevocationScope::Session(session),
        vec![session],
        "logout",
        tenantkit_core::now(),
    ));
    for heard in [&mut heard_a, &mut heard_b] {
        let message = tokio::time::timeout(HANG_GUARD, heard.recv())
            .await
            .expect("within the hang guard")
            .expect("a revocation");
        assert_eq!(message.sessions, [session], "{message:?}");
        assert_eq!(message.reason, "logout");
    }
    // A's own message came back over the transport and was not handed out twice: the next
    // thing A hears is B's.
    let user = UserId::new();
    let many: Vec<SessionId> = (0..400).map(|_| SessionId::new()).collect();
    bus_b.publish(Revocation::new(
        RevocationScope::User {
            user,
            tenant: None,
            except: None,
        },
        many.clone(),
        "password_changed",
        tenantkit_core::now(),
    ));
    let message = tokio::time::timeout(HANG_GUARD, heard_a.recv())
        .await
        .expect("within the hang guard")
        .expect("a revocation");
    assert_eq!(message.reason, "password_changed");
    assert!(message.covers(many[7], user, TenantId::new()));
}
