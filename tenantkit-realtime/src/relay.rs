//! Events from the app's transactions: [`publish_in`] writes the event into tenantkit-core's
//! transactional outbox (so it exists exactly when the change commits), and [`Relay`] moves
//! committed events onto the backplane, on any instance, surviving crashes.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use tenantkit_core::{Database, OUTBOX_CHANNEL, TenantTx};

use crate::backplane::Publish;
use crate::channel::{ChannelKey, ChannelName};
use crate::{Error, Realtime, Result};

/// The data of an outbox message the relay publishes (topic [`crate::OUTBOX_TOPIC`]).
#[derive(Debug, serde::Deserialize, Serialize)]
struct OutboxEvent {
    channel: String,
    event: String,
    data: Box<RawValue>,
    #[serde(default)]
    access_changed: bool,
}

/// The outbox topic of realtime events.
pub const OUTBOX_TOPIC: &str = "tenantkit.realtime";

/// Writes `data` as `event` on `channel` of `tx`'s tenant into the outbox, in `tx`: a
/// [`Relay`] publishes it after the commit (never for a rolled-back transaction, still after
/// a crash between commit and publish). `access_changed` marks a change of who may receive
/// the tenant's channels (see [`Publish::access_changed`]).
///
/// # Errors
/// [`Error::InvalidChannel`], [`Error::InvalidEvent`] (data that does not serialise), and
/// the outbox's errors.
pub async fn publish_in(
    tx: &mut TenantTx,
    channel: &str,
    event: &str,
    data: &(impl Serialize + ?Sized),
    access_changed: bool,
) -> Result<i64> {
    ChannelName::parse(channel)?;
    let data = serde_json::value::to_raw_value(data)
        .map_err(|e| Error::InvalidEvent(format!("data does not serialise: {e}")))?;
    let message = OutboxEvent {
        channel: channel.to_owned(),
        event: event.to_owned(),
        data,
        access_changed,
    };
    Ok(tx.outbox(OUTBOX_TOPIC, &message).await?)
}

/// Moves committed realtime events from the outbox to the backplane. Run one per instance
/// (they share the work; on PostgreSQL claims never overlap). Delivery is at least once; the
/// backplane drops a republished message (same outbox id), so each event gets one `seq`.
#[derive(Debug, Clone)]
pub struct Relay {
    db: Database,
    realtime: Realtime,
    /// Messages claimed at once (default 200).
    pub batch: u32,
    /// How long a claim is leased before another relay may take it (default 30 s).
    pub lease: Duration,
    /// How often to look without a notification (default 1 s; notifications wake it at once).
    pub poll: Duration,
    /// How long delivered messages are kept before they are pruned (default 1 hour).
    pub retention: Duration,
}

impl Relay {
    /// A relay from `db`'s outbox to `realtime`'s backplane.
    pub fn new(db: Database, realtime: Realtime) -> Self {
        Self {
            db,
            realtime,
            batch: 200,
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(1),
            retention: Duration::from_secs(3600),
        }
    }

    /// Relays one batch: how many messages it handled.
    ///
    /// # Errors
    /// Database errors; a backplane error stops the batch (the rest is claimed again after
    /// its lease).
    pub async fn relay_once(&self) -> Result<usize> {
        let claimed = self
            .db
            .outbox_claim(OUTBOX_TOPIC, self.batch, self.lease, tenantkit_core::now())
            .await?;
        let mut done = Vec::with_capacity(claimed.len());
        let mut failure = None;
        for message in &claimed {
            let prepared = message
                .tenant_id
                .ok_or_else(|| Error::InvalidEvent("a realtime event without a tenant".into()))
                .and_then(|tenant| {
                    let event: OutboxEvent = message.decode()?;
                    Ok(Publish {
                        channel: ChannelKey::new(tenant, &event.channel)?,
                        event: event.event,
                        data: event.data,
                        access_changed: event.access_changed,
                        origin: Some(message.id),
                    })
                });
            let publish = match prepared {
                Ok(publish) => publish,
                Err(err) => {
                    // It can never be published: mark it, so it does not block the outbox.
                    tracing::error!(id = message.id, error = %err, "realtime: dropping an invalid outbox event");
                    done.push(message.id);
                    continue;
                }
            };
            match self.realtime.publish_message(publish).await {
                Ok(_) => done.push(message.id),
                Err(err @ (Error::EventTooLarge(_) | Error::InvalidEvent(_))) => {
                    tracing::error!(id = message.id, error = %err, "realtime: dropping an unpublishable event");
                    done.push(message.id);
                }
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        if !done.is_empty() {
            self.db.outbox_delivered(&done).await?;
        }
        match failure {
            Some(err) => Err(err),
            None => Ok(claimed.len()),
        }
    }

    /// Relays until `shutdown` completes: at once after each commit that wrote events (a
    /// notification), and every [`Relay::poll`] anyway.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut listener = match self.db.listen(OUTBOX_CHANNEL).await {
            Ok(listener) => Some(listener),
            Err(err) => {
                tracing::warn!(error = %err, "realtime relay: cannot listen; polling");
                None
            }
        };
        let mut pruned_at = tokio::time::Instant::now();
        loop {
            match self.relay_once().await {
                // A full batch: there may be more.
                Ok(n) if n >= self.batch as usize => continue,
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "realtime relay: a batch failed"),
            }
            if pruned_at.elapsed() > Duration::from_secs(600) {
                pruned_at = tokio::time::Instant::now();
                let before = tenantkit_core::now() - self.retention;
                if let Err(err) = self.db.outbox_prune(before).await {
                    tracing::warn!(error = %err, "realtime relay: pruning failed");
                }
                #[cfg(any(feature = "sqlite", feature = "postgres"))]
                if let Some(tickets) = self.realtime.tickets()
                    && let Err(err) = tickets.prune().await
                {
                    tracing::warn!(error = %err, "realtime relay: pruning tickets failed");
                }
            }
            let wake = async {
                match listener.as_mut() {
                    // Any notification (a message, or a hint that some were missed) means: look.
                    Some(l) => {
                        if l.recv().await.is_err() {
                            tokio::time::sleep(self.poll).await;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = wake => {}
                () = tokio::time::sleep(self.poll) => {}
                () = &mut shutdown => return,
            }
        }
    }
}

/// tenantkit-auth's membership changes as realtime events: `member.added`,
/// `member.role_changed` and `member.removed` on the `tenant` channel, written in the
/// change's transaction and marked as changing access (so connections of the tenant re-check
/// their subscriptions). Install with
/// `AuthFlows::with_member_events(Arc::new(MemberEventsToRealtime))`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemberEventsToRealtime;

impl tenantkit_auth::flows::MemberEvents for MemberEventsToRealtime {
    fn member_changed<'a>(
        &'a self,
        tx: &'a mut TenantTx,
        change: &'a tenantkit_auth::flows::MemberChange,
    ) -> crate::BoxFuture<'a, tenantkit_core::Result<()>> {
        Box::pin(async move {
            let event = match change.kind {
                tenantkit_auth::flows::MemberChangeKind::Added => "member.added",
                tenantkit_auth::flows::MemberChangeKind::RoleChanged => "member.role_changed",
                _ => "member.removed",
            };
            publish_in(tx, crate::TENANT, event, change, true)
                .await
                .map(drop)
                .map_err(|err| match err {
                    Error::Core(err) => err,
                    other => tenantkit_core::Error::Config(other.to_string()),
                })
        })
    }
}
