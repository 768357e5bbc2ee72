//! The relay's side of the outbox on [`Database`]: claiming messages under a lease, marking
//! them delivered, pruning delivered ones.

use std::time::Duration;

use time::OffsetDateTime;

use super::{At, MARK_BATCH, MAX_CLAIM, MessageRow, OutboxMessage, check_topic};
use crate::{Backend, Database, Error, Result};

impl Database {
    /// Claims up to `limit` (at most [`MAX_CLAIM`]) undelivered messages of `topic` that are
    /// available at `now` (never claimed, or their last lease ran out), oldest id first, and
    /// leases them until `now + lease`: until then no other claim returns them. Each claim
    /// counts in [`OutboxMessage::attempts`]. Mark what was delivered with
    /// [`Database::outbox_delivered`]; what is not marked is claimed again after its lease.
    ///
    /// `now` is the caller's clock (pass [`crate::now`]; tests pass a later instant instead of
    /// sleeping). On PostgreSQL concurrent claims skip each other's rows (`FOR UPDATE SKIP
    /// LOCKED`); on SQLite they are serialised on the writer.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid topic or a lease too long to add to `now`;
    /// [`Error::Database`] on failure (nothing is claimed then).
    pub async fn outbox_claim(
        &self,
        topic: &str,
        limit: u32,
        lease: Duration,
        now: OffsetDateTime,
    ) -> Result<Vec<OutboxMessage>> {
        check_topic(topic)?;
        let limit = i64::from(limit.min(MAX_CLAIM));
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = At::new(now);
        let until = time::Duration::try_from(lease)
            .ok()
            .and_then(|lease| now.0.checked_add(lease))
            .map(At::new)
            .ok_or_else(|| Error::Config(format!("outbox lease {lease:?} is too long")))?;
        let sql = match self.backend() {
            Backend::Sqlite => {
                "UPDATE outbox SET available_at = $1, attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM outbox WHERE topic = $2 AND delivered_at IS NULL \
                              AND available_at <= $3 ORDER BY id LIMIT $4) \
                 RETURNING id, tenant_id, topic, payload, created_at, attempts"
            }
            Backend::Postgres => {
                "UPDATE outbox SET available_at = $1, attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM outbox WHERE topic = $2 AND delivered_at IS NULL \
                              AND available_at <= $3 ORDER BY id LIMIT $4 \
                              FOR UPDATE SKIP LOCKED) \
                 RETURNING id, tenant_id, topic, payload::text AS payload, created_at, attempts"
            }
        };
        let mut tx = self.begin_system().await?;
        let rows: Vec<MessageRow> = crate::with_conn!(&mut tx, |c| {
            sqlx::query_as(sql)
                .bind(until)
                .bind(topic)
                .bind(now)
                .bind(limit)
                .fetch_all(c)
                .await
        })?;
        tx.commit().await?;
        let mut messages: Vec<OutboxMessage> = rows
            .into_iter()
            .map(|row| OutboxMessage {
                id: row.id,
                tenant_id: row.tenant_id,
                topic: row.topic,
                payload: row.payload,
                created_at: row.created_at,
                attempts: row.attempts,
            })
            .collect();
        messages.sort_by_key(|m| m.id);
        Ok(messages)
    }

    /// Marks the messages `ids` delivered: no claim returns them again. Ids that are unknown
    /// or already delivered are skipped. How many were marked now.
    ///
    /// # Errors
    /// [`Error::Database`] on failure (then none of this call's batch is marked, and they are
    /// claimed again after their lease).
    pub async fn outbox_delivered(&self, ids: &[i64]) -> Result<u64> {
        let mut marked = 0;
        for batch in ids.chunks(MARK_BATCH) {
            let placeholders: Vec<String> = (2..batch.len() + 2).map(|i| format!("${i}")).collect();
            let sql = format!(
                "UPDATE outbox SET delivered_at = $1 \
                 WHERE delivered_at IS NULL AND id IN ({})",
                placeholders.join(", ")
            );
            let at = At::new(crate::now());
            let mut tx = self.begin_system().await?;
            let done = crate::with_conn!(&mut tx, |c| {
                let mut query = sqlx::query(&sql).bind(at);
                for id in batch {
                    query = query.bind(*id);
                }
                query.execute(c).await.map(|done| done.rows_affected())
            })?;
            tx.commit().await?;
            marked += done;
        }
        Ok(marked)
    }

    /// Deletes the messages delivered before `before` (a retention: keep delivered messages
    /// a while to investigate, then prune them). How many were deleted. Undelivered messages
    /// are never deleted.
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    pub async fn outbox_prune(&self, before: OffsetDateTime) -> Result<u64> {
        let before = At::new(before);
        let mut tx = self.begin_system().await?;
        let deleted = crate::with_conn!(&mut tx, |c| {
            sqlx::query("DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < $1")
                .bind(before)
                .execute(c)
                .await
                .map(|done| done.rows_affected())
        })?;
        tx.commit().await?;
        Ok(deleted)
    }
}
