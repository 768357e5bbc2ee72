//! Typed events: handlers receive Stripe's objects as async-stripe's own types
//! ([`stripe_shared`], re-exported), parsed from the stored event when the worker routes it.
//!
//! ```
//! use std::sync::Arc;
//! use tenantkit_billing::{BoxFuture, EventRouter, HandlerError, ObjectHandler, StoredEvent};
//! use tenantkit_billing::stripe_shared::Invoice;
//! use tenantkit_core::SystemTx;
//!
//! #[derive(Debug)]
//! struct Receipts;
//!
//! impl ObjectHandler<Invoice> for Receipts {
//!     fn handle<'a>(
//!         &'a self,
//!         _tx: &'a mut SystemTx,
//!         event: &'a StoredEvent,
//!         invoice: Invoice,
//!     ) -> BoxFuture<'a, Result<(), HandlerError>> {
//!         Box::pin(async move {
//!             tracing::info!(event = %event.event_id, paid = invoice.amount_paid, "receipt");
//!             Ok(())
//!         })
//!     }
//! }
//!
//! let router = EventRouter::new().on_object::<Invoice, _>("invoice.paid", Arc::new(Receipts));
//! # drop(router);
//! ```
//!
//! A handler without state of its own can be a function ([`EventRouter::on_object_fn`]):
//!
//! ```
//! use tenantkit_billing::{BoxFuture, EventRouter, HandlerError, StoredEvent};
//! use tenantkit_billing::stripe_shared::Invoice;
//! use tenantkit_core::SystemTx;
//!
//! fn receipt<'a>(
//!     _tx: &'a mut SystemTx,
//!     event: &'a StoredEvent,
//!     invoice: Invoice,
//! ) -> BoxFuture<'a, Result<(), HandlerError>> {
//!     Box::pin(async move {
//!         tracing::info!(event = %event.event_id, paid = invoice.amount_paid, "receipt");
//!         Ok(())
//!     })
//! }
//!
//! let router = EventRouter::new().on_object_fn("invoice.paid", receipt);
//! # drop(router);
//! ```
//!
//! An object that does not parse (an event rendered in an older Stripe API version than
//! [`API_VERSION`] can lack fields the types require) fails its handler with a message naming
//! both versions: the worker retries it and, at the end, keeps it as a dead letter to replay
//! (`billing replay`) once the endpoint's API version and this build agree. Events of types
//! without a handler are never parsed.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use tenantkit_core::SystemTx;

use crate::inbox::StoredEvent;
use crate::worker::{BoxFuture, EventHandler, EventRouter};
use crate::{API_VERSION, HandlerError};

impl StoredEvent {
    /// The event's `data.object` as async-stripe's type `T` (e.g.
    /// [`stripe_shared::Subscription`]).
    ///
    /// # Errors
    /// A message naming the type, the event and both API versions when it does not parse.
    pub fn object<T: miniserde::Deserialize>(&self) -> Result<T, String> {
        let object = self
            .payload
            .get("data")
            .and_then(|data| data.get("object"))
            .ok_or_else(|| format!("{} has no data.object", self.event_id))?;
        let text = serde_json::to_string(object).map_err(|e| e.to_string())?;
        miniserde::json::from_str(&text).map_err(|_| {
            let version = self
                .payload
                .get("api_version")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("unknown");
            format!(
                "{} ({}, API version {version}) does not parse as async-stripe's {} \
                 (generated from API version {API_VERSION})",
                self.event_id,
                self.event_type,
                short_name::<T>(),
            )
        })
    }
}

fn short_name<T>() -> &'static str {
    let name = std::any::type_name::<T>();
    name.rsplit("::").next().unwrap_or(name)
}

/// Handles events whose object is async-stripe's type `T`, inside the transaction that also
/// marks the event done (see [`EventHandler`]).
pub trait ObjectHandler<T>: fmt::Debug + Send + Sync + 'static {
    /// Handles `event` with its parsed `object`; an error rolls back and schedules a retry
    /// (see [`HandlerError`]).
    fn handle<'a>(
        &'a self,
        tx: &'a mut SystemTx,
        event: &'a StoredEvent,
        object: T,
    ) -> BoxFuture<'a, Result<(), HandlerError>>;
}

/// A typed handler as a function ([`EventRouter::on_object_fn`]).
pub type ObjectFn<T> =
    for<'a> fn(&'a mut SystemTx, &'a StoredEvent, T) -> BoxFuture<'a, Result<(), HandlerError>>;

/// An [`ObjectFn`] as an [`ObjectHandler`].
struct FnHandler<T>(ObjectFn<T>);

impl<T> fmt::Debug for FnHandler<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FnHandler<{}>", short_name::<T>())
    }
}

impl<T: Send + 'static> ObjectHandler<T> for FnHandler<T> {
    fn handle<'a>(
        &'a self,
        tx: &'a mut SystemTx,
        event: &'a StoredEvent,
        object: T,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        (self.0)(tx, event, object)
    }
}

/// Parses the object, then hands it to the typed handler.
struct Typed<T, H> {
    handler: Arc<H>,
    object: PhantomData<fn() -> T>,
}

impl<T, H: fmt::Debug> fmt::Debug for Typed<T, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Typed")
            .field("object", &short_name::<T>())
            .field("handler", &self.handler)
            .finish()
    }
}

impl<T, H> EventHandler for Typed<T, H>
where
    T: miniserde::Deserialize + Send + 'static,
    H: ObjectHandler<T>,
{
    fn handle<'a>(
        &'a self,
        tx: &'a mut SystemTx,
        event: &'a StoredEvent,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let object = event.object::<T>()?;
            self.handler.handle(tx, event, object).await
        })
    }
}

impl EventRouter {
    /// Routes `event_type` to `handler`, which receives the event's object parsed as `T`.
    pub fn on_object<T, H>(self, event_type: &str, handler: Arc<H>) -> Self
    where
        T: miniserde::Deserialize + Send + 'static,
        H: ObjectHandler<T>,
    {
        self.on(
            event_type,
            Arc::new(Typed {
                handler,
                object: PhantomData,
            }),
        )
    }

    /// Routes `event_type` to the function `handler` (a handler without state of its own),
    /// which receives the event's object parsed as `T`.
    pub fn on_object_fn<T>(self, event_type: &str, handler: ObjectFn<T>) -> Self
    where
        T: miniserde::Deserialize + Send + 'static,
    {
        self.on_object::<T, _>(event_type, Arc::new(FnHandler(handler)))
    }
}
