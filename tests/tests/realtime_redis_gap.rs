//! The Redis backplane's listening connection is killed (Redis `CLIENT KILL TYPE pubsub`): the
//! instance reconnects, reports the gap to its clients and to its revocation listeners, and
//! what was published meanwhile is recovered from history. Its own test binary, because the
//! kill reaches every listener of the Redis server.
#![allow(clippy::unwrap_used)]

use tenantkit_auth::RevocationScope;
use tenantkit_core::TenantId;
use tenantkit_e2e::backplane::{HANG_GUARD, message};
use tenantkit_e2e::redis::{self, Reply};
use tenantkit_realtime::{Backplane, ChannelKey, HistoryLimits, RedisBackplane};

#[tokio::test]
async fn a_lost_listener_reconnects_and_reports_the_gap() {
    let Some(url) = redis::url() else {
        return;
    };
    let prefix = redis::prefix();
    let a = RedisBackplane::connect_with_prefix(&url, HistoryLimits::default(), &prefix)
        .await
        .unwrap();
    let b = RedisBackplane::connect_with_prefix(&url, HistoryLimits::default(), &prefix)
        .await
        .unwrap();
    let channel = ChannelKey::new(TenantId::new(), "tenant").unwrap();
    let mut gaps = b.gaps().unwrap();
    let mut revocations = b.revocation_bus().subscribe();
    let mut on_b = b.events();
    assert_eq!(a.publish(message(&channel, 1, None)).await.unwrap(), 1);
    assert_eq!(on_b.recv().await.unwrap().seq, 1);

    let killed = redis::command(&url, &["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    assert!(
        matches!(&killed, Reply::Text(n) if n.parse::<u32>().unwrap() >= 2),
        "{killed:?}"
    );
    // Published while B may be reconnecting.
    assert_eq!(a.publish(message(&channel, 2, None)).await.unwrap(), 2);

    tokio::time::timeout(HANG_GUARD, gaps.changed())
        .await
        .expect("the gap is reported")
        .unwrap();
    let notice = tokio::time::timeout(HANG_GUARD, revocations.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(notice.scope, RevocationScope::Missed);

    // Listening again: new events arrive, and a resume from seq 1 recovers what may have been
    // missed.
    assert_eq!(a.publish(message(&channel, 3, None)).await.unwrap(), 3);
    loop {
        let event = tokio::time::timeout(HANG_GUARD, on_b.recv())
            .await
            .unwrap()
            .unwrap();
        if event.seq == 3 {
            break;
        }
        assert_eq!(event.seq, 2);
    }
    let replay = b.replay(&channel, Some(1)).await.unwrap();
    assert!(replay.recovered);
    assert_eq!(
        replay.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [2, 3]
    );
}
