//! The background workers a serving instance runs until it stops: the billing worker, the
//! realtime relay, the storage sweeper.

use crate::AppState;

/// Handles stored Stripe events (subscription state, the tenant's plan, audited) until
/// `stop` changes.
pub(super) fn spawn_billing_worker(
    state: &AppState,
    lease_secs: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let mut worker = tenantkit_billing::Worker::new(
        state.db.clone(),
        tenantkit_billing::SubscriptionHandler::router(state.plans.plans().clone()),
    );
    worker.lease = time::Duration::seconds(i64::try_from(lease_secs.max(1)).unwrap_or(60));
    tokio::spawn(async move { worker.run(async move { drop(stop.changed().await) }).await })
}

/// Publishes committed realtime events from the outbox until `stop` changes.
pub(super) fn spawn_realtime_relay(
    state: &AppState,
    lease_secs: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let mut relay = tenantkit_realtime::Relay::new(state.db.clone(), state.realtime.clone());
    relay.lease = std::time::Duration::from_secs(lease_secs.max(1));
    tokio::spawn(async move { relay.run(async move { drop(stop.changed().await) }).await })
}

/// Sweeps expired uploads and orphaned objects every `secs` seconds (never when 0) until
/// `stop` changes.
pub(super) fn spawn_sweeper(
    storage: tenantkit_storage::Storage,
    secs: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let sweeper = tenantkit_storage::Sweeper::new(storage, std::time::Duration::from_secs(secs));
    (secs > 0).then(|| {
        tokio::spawn(async move { sweeper.run(async move { drop(stop.changed().await) }).await })
    })
}
