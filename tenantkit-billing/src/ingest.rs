//! Group commit for the inbox: concurrent deliveries are written by one task, as many as are
//! waiting (up to [`MAX_BATCH`]) in one transaction and one multi-row
//! `INSERT … ON CONFLICT (event_id) DO NOTHING RETURNING event_id`, and each delivery is
//! answered only once that transaction has committed.
//!
//! On SQLite, where every write goes through one connection, this turns one transaction per
//! delivery into one per batch. A batch that fails is written again one delivery at a time,
//! so one bad delivery never fails the others. The writer runs as its own task, so a delivery
//! whose request is dropped midway (its client went away) never stalls the others.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use tenantkit_core::{Backend, Database, with_conn};
use tokio::sync::{mpsc, oneshot};

use crate::Result;

/// The most deliveries one transaction writes.
pub(crate) const MAX_BATCH: usize = 256;

/// One verified delivery to store.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) event_id: String,
    pub(crate) event_type: String,
    pub(crate) created: i64,
    pub(crate) livemode: bool,
    pub(crate) payload: String,
}

type Job = (Delivery, oneshot::Sender<Result<bool>>);

/// The handle to the writer task (started by the first delivery).
#[derive(Debug, Clone, Default)]
pub(crate) struct Writer {
    sender: Arc<Mutex<Option<mpsc::Sender<Job>>>>,
}

impl Writer {
    /// The running writer task's queue, starting a task when there is none (the first
    /// delivery, or the task ended: it panicked, or its runtime shut down).
    fn sender(&self, db: &Database) -> mpsc::Sender<Job> {
        let mut slot = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some(sender) if !sender.is_closed() => sender.clone(),
            _ => {
                let (sender, receiver) = mpsc::channel(4 * MAX_BATCH);
                tokio::spawn(write_loop(db.clone(), receiver));
                *slot = Some(sender.clone());
                sender
            }
        }
    }

    /// Stores `delivery` in `db`; `true` when it was new, `false` for a redelivery. Returns
    /// once the transaction that wrote it has committed.
    pub(crate) async fn store(&self, db: &Database, delivery: Delivery) -> Result<bool> {
        let sender = self.sender(db);
        let (reply, answer) = oneshot::channel();
        sender
            .send((delivery, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The writer task is gone (it only ends when it panicked): a 500, logged.
fn stopped() -> crate::Error {
    crate::Error::Config("the billing inbox writer stopped".into())
}

async fn write_loop(db: Database, mut receiver: mpsc::Receiver<Job>) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        // Nobody waits for a delivery whose request was dropped; Stripe will deliver it again.
        jobs.retain(|(_, reply)| !reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let mut deliveries: Vec<&Delivery> = jobs.iter().map(|(delivery, _)| delivery).collect();
        // One order of keys for every instance: concurrent batches on PostgreSQL never
        // deadlock on each other's rows.
        deliveries.sort_by(|a, b| a.event_id.cmp(&b.event_id));
        match insert(&db, &deliveries).await {
            Ok(inserted) => {
                let mut inserted: HashSet<String> = inserted.into_iter().collect();
                for (delivery, reply) in jobs.drain(..) {
                    // The first of several deliveries of one event in a batch is the new one.
                    let _ = reply.send(Ok(inserted.remove(&delivery.event_id)));
                }
            }
            Err(err) if jobs.len() == 1 => {
                if let Some((_, reply)) = jobs.pop() {
                    let _ = reply.send(Err(err));
                }
            }
            Err(err) if !about_a_row(&err) => {
                // The database itself failed (unreachable, pool exhausted): the same answer
                // for all, without retrying each one into the same failure.
                tracing::warn!(error = %err, deliveries = jobs.len(), "billing inbox write failed");
                for (_, reply) in jobs.drain(..) {
                    let _ = reply.send(Err(crate::Error::Core(tenantkit_core::Error::Database(
                        sqlx::Error::Protocol("the inbox's batch failed".into()),
                    ))));
                }
            }
            Err(_) => {
                // One at a time: each delivery gets its own answer.
                for (delivery, reply) in jobs.drain(..) {
                    let answer = insert(&db, &[&delivery])
                        .await
                        .map(|inserted| !inserted.is_empty());
                    let _ = reply.send(answer);
                }
            }
        }
    }
}

/// Whether `err` is the database refusing a statement (one row can be the cause), rather
/// than the database being unreachable or busy.
fn about_a_row(err: &crate::Error) -> bool {
    matches!(
        err,
        crate::Error::Core(tenantkit_core::Error::Database(sqlx::Error::Database(_)))
    )
}

/// Inserts `deliveries` in one transaction; answers the ids that were new.
async fn insert(db: &Database, deliveries: &[&Delivery]) -> Result<Vec<String>> {
    let backend = db.backend();
    let now = tenantkit_core::now();
    let mut sql = String::from(
        "INSERT INTO billing_events (event_id, event_type, created, livemode, payload, \
         next_attempt_at, received_at) VALUES ",
    );
    for i in 0..deliveries.len() {
        let n = i * 5;
        if i > 0 {
            sql.push_str(", ");
        }
        let payload = if backend == Backend::Postgres {
            format!("${}::jsonb", n + 6)
        } else {
            format!("${}", n + 6)
        };
        sql.push_str(&format!(
            "(${}, ${}, ${}, ${}, {payload}, $1, $1)",
            n + 2,
            n + 3,
            n + 4,
            n + 5
        ));
    }
    sql.push_str(" ON CONFLICT (event_id) DO NOTHING RETURNING event_id");
    let mut tx = db.begin_system().await?;
    let inserted: Vec<String> = with_conn!(&mut tx, |c| {
        let mut query = sqlx::query_scalar(&sql)
            // One statement text per batch size: keep them out of the statement cache.
            .persistent(deliveries.len() == 1)
            .bind(now);
        for delivery in deliveries {
            query = query
                .bind(&delivery.event_id)
                .bind(&delivery.event_type)
                .bind(delivery.created)
                .bind(delivery.livemode)
                .bind(&delivery.payload);
        }
        query.fetch_all(c).await
    })?;
    tx.commit().await?;
    Ok(inserted)
}
