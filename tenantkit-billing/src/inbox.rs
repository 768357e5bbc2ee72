//! The durable inbox (this crate's `billing_events` table) and the endpoint as one call; the
//! worker that handles stored events is in `worker`.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

use time::OffsetDateTime;

use tenantkit_core::{Backend, Database, MigrationSet, SystemTx, with_conn};

use crate::{Error, Result, WebhookVerifier};

/// This crate's migrations (versions 4000 and up): `billing_events` (the inbox, numbering
/// events in arrival order), `billing_customers` and `billing_subscriptions`.
pub fn migrations() -> MigrationSet {
    tenantkit_core::migration_set!("tenantkit-billing")
}

/// Where a stored event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventState {
    /// Waiting for the worker (or for its next attempt).
    Pending,
    /// Claimed by a worker, until its lease ends.
    Processing,
    /// Handled.
    Done,
    /// Failed too often; kept for `billing replay`.
    Dead,
}

impl EventState {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventState::Pending => "pending",
            EventState::Processing => "processing",
            EventState::Done => "done",
            EventState::Dead => "dead",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "processing" => EventState::Processing,
            "done" => EventState::Done,
            "dead" => EventState::Dead,
            _ => EventState::Pending,
        }
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    /// Stripe's event id (`evt_…`).
    pub event_id: String,
    /// Its type (`customer.subscription.updated`).
    pub event_type: String,
    /// Stripe's `created` (Unix seconds).
    pub created: i64,
    /// The whole event, as Stripe sent it.
    pub payload: serde_json::Value,
    /// Where it stands.
    pub state: EventState,
    /// Handling attempts so far.
    pub attempts: i32,
    /// The last handler error, if any.
    pub last_error: Option<String>,
    /// When it was received.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// Its place in the order of arrival: a number the inbox gives each new event, larger
    /// for every later one (the tie-breaker of events of the same `created` second).
    pub arrival: i64,
}

/// What storing a delivery did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ingested {
    /// The event's id.
    pub event_id: String,
    /// Whether it was already stored (a redelivery: nothing changed).
    pub duplicate: bool,
}

/// The envelope every Stripe event has.
#[derive(Debug, Deserialize)]
struct Envelope {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created: i64,
    #[serde(default)]
    livemode: bool,
    #[serde(default)]
    object: Option<String>,
    #[serde(default)]
    api_version: Option<String>,
}

/// Said once per process: events rendered in another API version than the typed handlers
/// read may not parse (they are kept, retried and dead-lettered, never lost).
static API_VERSION_WARNED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The payload as stored: the body exactly as received, except that U+0000 in a string
/// becomes U+FFFD (PostgreSQL's `jsonb` cannot hold U+0000; both backends store the same).
fn storable(body: &str, mut value: serde_json::Value) -> String {
    fn replace_nul(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(text) if text.contains('\0') => {
                *text = text.replace('\0', "\u{FFFD}");
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(replace_nul),
            serde_json::Value::Object(map) => {
                // Keys too: rebuild the map when one holds U+0000.
                if map.keys().any(|k| k.contains('\0')) {
                    let entries = std::mem::take(map);
                    for (key, mut item) in entries {
                        replace_nul(&mut item);
                        map.insert(key.replace('\0', "\u{FFFD}"), item);
                    }
                } else {
                    map.values_mut().for_each(replace_nul);
                }
            }
            _ => {}
        }
    }
    if !body.contains("\\u0000") {
        return body.to_owned();
    }
    replace_nul(&mut value);
    value.to_string()
}

/// The inbox table.
#[derive(Debug, Clone)]
pub struct Inbox {
    db: Database,
    writer: crate::ingest::Writer,
}

pub(crate) type Row = (
    String,
    String,
    i64,
    String,
    String,
    i32,
    Option<String>,
    OffsetDateTime,
    i64,
);

const COLUMNS_SQLITE: &str =
    "event_id, event_type, created, payload, state, attempts, last_error, received_at, arrival";
const COLUMNS_PG: &str = "event_id, event_type, created, payload::text, state, attempts, \
     last_error, received_at, arrival";

pub(crate) fn columns(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => COLUMNS_PG,
        _ => COLUMNS_SQLITE,
    }
}

pub(crate) fn event_of(row: Row) -> StoredEvent {
    StoredEvent {
        event_id: row.0,
        event_type: row.1,
        created: row.2,
        payload: serde_json::from_str(&row.3).unwrap_or(serde_json::Value::Null),
        state: EventState::parse(&row.4),
        attempts: row.5,
        last_error: row.6,
        received_at: row.7,
        arrival: row.8,
    }
}

impl Inbox {
    /// The inbox in `db` (migrated with [`migrations`]).
    pub fn new(db: Database) -> Self {
        Self {
            db,
            writer: crate::ingest::Writer::default(),
        }
    }

    /// Stores a verified event body (once: a redelivery is a no-op), committed before this
    /// returns. Concurrent deliveries share a transaction (group commit, see the `ingest`
    /// module); the first call starts the inbox's writer task on the current Tokio runtime.
    ///
    /// # Errors
    /// [`Error::NotAnEvent`] for a body that is not a Stripe event; database errors.
    pub async fn ingest(&self, body: &[u8]) -> Result<Ingested> {
        // All of it is JSON (a lone surrogate escape is not), not only the envelope.
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|_| Error::NotAnEvent("not JSON"))?;
        let envelope =
            Envelope::deserialize(&value).map_err(|_| Error::NotAnEvent("not an event object"))?;
        if !envelope.id.starts_with("evt_")
            || envelope.id.len() > 255
            || !envelope
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(Error::NotAnEvent("the id is not an event id"));
        }
        if envelope.object.as_deref().is_some_and(|o| o != "event") {
            return Err(Error::NotAnEvent("the object is not an event"));
        }
        if envelope.event_type.is_empty()
            || envelope.event_type.len() > 255
            || envelope.event_type.chars().any(char::is_control)
        {
            return Err(Error::NotAnEvent("the type is missing"));
        }
        let payload = std::str::from_utf8(body).map_err(|_| Error::NotAnEvent("not UTF-8"))?;
        if let Some(version) = envelope.api_version.as_deref()
            && version != crate::API_VERSION
            && !API_VERSION_WARNED.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                event = %envelope.id,
                event_api_version = version,
                handlers_api_version = crate::API_VERSION,
                "a Stripe event in another API version than the typed handlers read: set the \
                 webhook endpoint's API version to {}, or its events may not parse",
                crate::API_VERSION
            );
        }
        let payload = storable(payload, value);
        let new = self
            .writer
            .store(
                &self.db,
                crate::ingest::Delivery {
                    event_id: envelope.id.clone(),
                    event_type: envelope.event_type,
                    created: envelope.created,
                    livemode: envelope.livemode,
                    payload,
                },
            )
            .await?;
        Ok(Ingested {
            event_id: envelope.id,
            duplicate: !new,
        })
    }

    /// One stored event.
    ///
    /// # Errors
    /// Database errors.
    pub async fn get(&self, event_id: &str) -> Result<Option<StoredEvent>> {
        let sql = format!(
            "SELECT {} FROM billing_events WHERE event_id = $1",
            columns(self.db.backend())
        );
        let mut tx = self.db.begin_system_read().await?;
        let row: Option<Row> = with_conn!(&mut tx, |c| {
            sqlx::query_as(&sql).bind(event_id).fetch_optional(c).await
        })?;
        tx.commit().await?;
        Ok(row.map(event_of))
    }

    /// Up to `limit` events in `state` (all states when `None`), newest received first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list(&self, state: Option<EventState>, limit: i64) -> Result<Vec<StoredEvent>> {
        let sql = format!(
            "SELECT {} FROM billing_events WHERE ($1 IS NULL OR state = $1) \
             ORDER BY received_at DESC, event_id LIMIT $2",
            columns(self.db.backend())
        );
        let state = state.map(EventState::as_str);
        let mut tx = self.db.begin_system_read().await?;
        let rows: Vec<Row> = with_conn!(&mut tx, |c| {
            sqlx::query_as(&sql)
                .bind(state)
                .bind(limit)
                .fetch_all(c)
                .await
        })?;
        tx.commit().await?;
        Ok(rows.into_iter().map(event_of).collect())
    }

    /// Puts an event (a dead letter, or a handled one) back in line for the worker, with its
    /// attempts reset. `false` when there is no such event. (In a transaction of one's own:
    /// [`Inbox::replay_in`].)
    ///
    /// # Errors
    /// Database errors.
    pub async fn replay(&self, event_id: &str) -> Result<bool> {
        let mut tx = self.db.begin_system().await?;
        let replayed = self.replay_in(&mut tx, event_id).await?;
        tx.commit().await?;
        Ok(replayed)
    }

    /// [`Inbox::replay`] inside the caller's system transaction: the event is back in line
    /// exactly when that transaction commits, together with what else it writes (the fix
    /// the event waited for, such as the customer mapping it could not find, or an operator's
    /// audit entry). `false` when there is no such event.
    ///
    /// # Errors
    /// Database errors (they poison `tx`).
    pub async fn replay_in(&self, tx: &mut SystemTx, event_id: &str) -> Result<bool> {
        let now = tenantkit_core::now();
        let changed = with_conn!(tx, |c| {
            sqlx::query(
                "UPDATE billing_events SET state = 'pending', attempts = 0, lease_until = NULL, \
                 next_attempt_at = $2, last_error = NULL WHERE event_id = $1",
            )
            .bind(event_id)
            .bind(now)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(changed > 0)
    }
}

/// The webhook endpoint as one call: size limit, signature, durable insert.
#[derive(Debug, Clone)]
pub struct Billing {
    inbox: Inbox,
    verifier: Option<Arc<WebhookVerifier>>,
    body_limit: usize,
}

impl Billing {
    /// The endpoint over `db`, verifying with `verifier` (`None`: no secret configured, so
    /// every delivery is refused as unverifiable).
    pub fn new(db: Database, verifier: Option<WebhookVerifier>) -> Self {
        Self {
            inbox: Inbox::new(db),
            verifier: verifier.map(Arc::new),
            body_limit: crate::DEFAULT_BODY_LIMIT,
        }
    }

    /// Replaces the largest body read.
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// The largest body read ([`crate::DEFAULT_BODY_LIMIT`] unless replaced).
    pub fn body_limit(&self) -> usize {
        self.body_limit
    }

    /// The inbox.
    pub fn inbox(&self) -> &Inbox {
        &self.inbox
    }

    /// Handles one delivery: `signature` is the `Stripe-Signature` header's bytes, `body` the
    /// raw body. Answers once the event is committed (a duplicate is reported, not stored
    /// again); refused deliveries store nothing.
    ///
    /// # Errors
    /// [`Error::TooLarge`], [`Error::Signature`], [`Error::NotAnEvent`], database errors.
    pub async fn receive(&self, signature: Option<&[u8]>, body: &[u8]) -> Result<Ingested> {
        self.receive_at(signature, body, tenantkit_core::now())
            .await
    }

    /// [`Billing::receive`] with the clock given (for tests and deterministic checks).
    ///
    /// # Errors
    /// As [`Billing::receive`].
    pub async fn receive_at(
        &self,
        signature: Option<&[u8]>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<Ingested> {
        if body.len() > self.body_limit {
            return Err(Error::TooLarge);
        }
        let verifier = self
            .verifier
            .as_ref()
            .ok_or(Error::Signature(crate::SignatureError::NoMatch))?;
        verifier.verify(signature, body, now)?;
        self.inbox.ingest(body).await
    }
}
