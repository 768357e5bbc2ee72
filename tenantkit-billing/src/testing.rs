//! A fake event sequencer for tests (yours too): a subscription's life as realistic Stripe
//! event payloads, signed like Stripe signs them, to deliver in any order, with duplicates.

use serde_json::{Value, json};

use crate::signature::sign;

/// One event of a life: its id, type, `created` and the whole payload.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeEvent {
    /// `evt_…`.
    pub id: String,
    /// The event type.
    pub event_type: String,
    /// Stripe's `created`.
    pub created: i64,
    /// The event JSON, as Stripe sends it.
    pub body: Vec<u8>,
}

impl FakeEvent {
    /// The `Stripe-Signature` header for this event at `t` with `secret`.
    pub fn signature(&self, secret: &str, t: i64) -> String {
        sign(secret, t, &self.body)
    }
}

/// Builds the events of one subscription of `tenant` (a tenant id) on `price`.
#[derive(Debug, Clone)]
pub struct SubscriptionLife {
    tenant: String,
    price: String,
    tag: String,
    start: i64,
    events: Vec<FakeEvent>,
}

impl SubscriptionLife {
    /// A life for `tenant` on `price`; `tag` makes its Stripe ids unique (`cus_<tag>`,
    /// `sub_<tag>`), `start` is the first event's `created`.
    pub fn new(tenant: &str, price: &str, tag: &str, start: i64) -> Self {
        Self {
            tenant: tenant.to_owned(),
            price: price.to_owned(),
            tag: tag.to_owned(),
            start,
            events: Vec::new(),
        }
    }

    fn at(&self, step: i64) -> i64 {
        self.start + step
    }

    fn push(&mut self, event_type: &str, created: i64, object: Value) {
        let id = format!("evt_{}_{}", self.tag, self.events.len() + 1);
        let body = json!({
            "id": id, "object": "event", "api_version": "2024-06-20", "created": created,
            "livemode": false, "pending_webhooks": 1, "type": event_type,
            "request": {"id": null, "idempotency_key": null},
            "data": {"object": object},
        });
        self.events.push(FakeEvent {
            id,
            event_type: event_type.to_owned(),
            created,
            body: serde_json::to_vec(&body).unwrap_or_default(),
        });
    }

    fn subscription(&self, status: &str, period_end: i64, cancel_at_period_end: bool) -> Value {
        json!({
            "id": format!("sub_{}", self.tag), "object": "subscription",
            "customer": format!("cus_{}", self.tag), "status": status,
            "cancel_at_period_end": cancel_at_period_end, "current_period_end": period_end,
            "current_period_start": period_end - 30 * 86_400, "livemode": false,
            "metadata": {},
            "items": {"object": "list", "data": [{
                "id": format!("si_{}", self.tag), "object": "subscription_item",
                "price": {"id": self.price, "object": "price", "currency": "usd",
                          "unit_amount": 2000, "recurring": {"interval": "month"}},
                "quantity": 1, "current_period_end": period_end,
            }]},
        })
    }

    /// `checkout.session.completed` (the tenant in `client_reference_id`).
    pub fn checkout_completed(mut self, step: i64) -> Self {
        let object = json!({
            "id": format!("cs_{}", self.tag), "object": "checkout.session",
            "client_reference_id": self.tenant, "customer": format!("cus_{}", self.tag),
            "subscription": format!("sub_{}", self.tag), "mode": "subscription",
            "status": "complete", "payment_status": "paid", "metadata": {},
        });
        let at = self.at(step);
        self.push("checkout.session.completed", at, object);
        self
    }

    /// `customer.subscription.created` / `.updated` in `status`.
    pub fn subscription_event(mut self, kind: &str, step: i64, status: &str) -> Self {
        let at = self.at(step);
        let object = self.subscription(status, at + 30 * 86_400, false);
        self.push(&format!("customer.subscription.{kind}"), at, object);
        self
    }

    /// `invoice.paid` (or another invoice event) for the subscription.
    pub fn invoice(mut self, kind: &str, step: i64) -> Self {
        let object = json!({
            "id": format!("in_{}_{step}", self.tag), "object": "invoice",
            "customer": format!("cus_{}", self.tag),
            "subscription": format!("sub_{}", self.tag), "status": "paid",
            "amount_paid": 2000, "currency": "usd",
        });
        let at = self.at(step);
        self.push(&format!("invoice.{kind}"), at, object);
        self
    }

    /// `customer.subscription.deleted`.
    pub fn deleted(mut self, step: i64) -> Self {
        let at = self.at(step);
        let object = self.subscription("canceled", at, false);
        self.push("customer.subscription.deleted", at, object);
        self
    }

    /// checkout completed → created (incomplete) → updated (active) → invoice paid →
    /// updated (past due) → deleted, one second apart, the deletion in the same second as
    /// the last update (Stripe's timestamps tie).
    pub fn full_life(tenant: &str, price: &str, tag: &str, start: i64) -> Self {
        Self::new(tenant, price, tag, start)
            .checkout_completed(0)
            .subscription_event("created", 1, "incomplete")
            .subscription_event("updated", 2, "active")
            .invoice("paid", 2)
            .subscription_event("updated", 3, "past_due")
            .deleted(3)
    }

    /// The same life without the deletion, back to active at the end.
    pub fn recovering_life(tenant: &str, price: &str, tag: &str, start: i64) -> Self {
        Self::new(tenant, price, tag, start)
            .checkout_completed(0)
            .subscription_event("created", 1, "incomplete")
            .subscription_event("updated", 2, "active")
            .invoice("paid", 2)
            .subscription_event("updated", 3, "past_due")
            .invoice("payment_failed", 3)
            .subscription_event("updated", 4, "active")
    }

    /// The events, in the order they happened.
    pub fn events(&self) -> &[FakeEvent] {
        &self.events
    }
}
