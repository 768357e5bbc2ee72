//! A fake event sequencer for tests (yours too): a subscription's life as realistic Stripe
//! event payloads, signed like Stripe signs them, to deliver in any order, with duplicates.
//!
//! The objects start from Stripe's own fixtures (stripe-mock's `fixtures.json`, as shipped in
//! async-stripe's `openapi/`, for the API version async-stripe's types are generated from),
//! with ids, customer, status, price and periods set per event; async-stripe's types parse
//! every one (tested).

use serde_json::{Value, json};

use crate::API_VERSION;
use crate::signature::sign;

const SUBSCRIPTION: &str = include_str!("subscription.json");
const CHECKOUT_SESSION: &str = include_str!("checkout_session.json");
const INVOICE: &str = include_str!("invoice.json");
const PORTAL_SESSION: &str = include_str!("portal_session.json");

fn fixture(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// Sets `fields` on `object`.
fn patch(object: &mut Value, fields: Value) {
    if let (Some(object), Value::Object(fields)) = (object.as_object_mut(), fields) {
        object.extend(fields);
    }
}

/// What Stripe's API answers to `POST /v1/checkout/sessions`: an open subscription Checkout
/// session at `url` (for a local stand-in of Stripe's API in tests).
pub fn checkout_session_answer(id: &str, url: &str) -> Value {
    let mut object = fixture(CHECKOUT_SESSION);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    patch(
        &mut object,
        json!({
            "id": id, "url": url, "status": "open", "payment_status": "unpaid",
            "subscription": null, "created": now, "expires_at": now + 86_400,
        }),
    );
    object
}

/// What Stripe's API answers to `POST /v1/billing_portal/sessions`: a portal session of
/// `customer` at `url`.
pub fn portal_session_answer(id: &str, customer: &str, url: &str) -> Value {
    let mut object = fixture(PORTAL_SESSION);
    patch(
        &mut object,
        json!({
            "id": id, "customer": customer, "url": url, "flow": null,
            "created": time::OffsetDateTime::now_utc().unix_timestamp(),
        }),
    );
    object
}

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
            "id": id, "object": "event", "api_version": API_VERSION, "created": created,
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

    fn subscription(&self, status: &str, at: i64, period_end: i64) -> Value {
        let id = format!("sub_{}", self.tag);
        let mut object = fixture(SUBSCRIPTION);
        let start = self.start;
        patch(
            &mut object,
            json!({
                "id": id, "customer": format!("cus_{}", self.tag), "status": status,
                "created": start, "start_date": start, "billing_cycle_anchor": start,
                "trial_start": (status == "trialing").then_some(start),
                "trial_end": (status == "trialing").then_some(period_end),
                "canceled_at": (status == "canceled").then_some(at),
                "ended_at": (status == "canceled").then_some(at),
            }),
        );
        let item = &mut object["items"]["data"][0];
        patch(
            item,
            json!({
                "id": format!("si_{}", self.tag), "subscription": id, "created": start,
                "current_period_start": period_end - 30 * 86_400,
                "current_period_end": period_end,
            }),
        );
        patch(
            &mut item["price"],
            json!({"id": self.price, "created": start}),
        );
        patch(
            &mut item["plan"],
            json!({"id": self.price, "created": start}),
        );
        object["items"]["url"] = json!(format!("/v1/subscription_items?subscription={id}"));
        object
    }

    /// `checkout.session.completed` (the tenant in `client_reference_id`).
    pub fn checkout_completed(mut self, step: i64) -> Self {
        let at = self.at(step);
        let mut object = fixture(CHECKOUT_SESSION);
        patch(
            &mut object,
            json!({
                "id": format!("cs_{}", self.tag), "client_reference_id": self.tenant,
                "customer": format!("cus_{}", self.tag),
                "subscription": format!("sub_{}", self.tag),
                "created": at - 60, "expires_at": at + 86_400,
            }),
        );
        self.push("checkout.session.completed", at, object);
        self
    }

    /// `customer.subscription.created` / `.updated` (or another subscription event:
    /// `paused`, `resumed`, `trial_will_end`) in `status`.
    pub fn subscription_event(mut self, kind: &str, step: i64, status: &str) -> Self {
        let at = self.at(step);
        let object = self.subscription(status, at, at + 30 * 86_400);
        self.push(&format!("customer.subscription.{kind}"), at, object);
        self
    }

    /// `invoice.paid` (or another invoice event) for the subscription.
    pub fn invoice(mut self, kind: &str, step: i64) -> Self {
        let at = self.at(step);
        let paid = kind == "paid";
        let mut object = fixture(INVOICE);
        patch(
            &mut object,
            json!({
                "id": format!("in_{}_{step}", self.tag), "customer": format!("cus_{}", self.tag),
                "status": if paid { "paid" } else { "open" }, "created": at,
                "amount_due": 2000, "amount_paid": if paid { 2000 } else { 0 },
                "amount_remaining": if paid { 0 } else { 2000 },
                "attempted": true, "attempt_count": 1,
                "period_start": at - 30 * 86_400, "period_end": at,
            }),
        );
        object["parent"]["subscription_details"]["subscription"] =
            json!(format!("sub_{}", self.tag));
        self.push(&format!("invoice.{kind}"), at, object);
        self
    }

    /// `customer.subscription.deleted`.
    pub fn deleted(mut self, step: i64) -> Self {
        let at = self.at(step);
        let object = self.subscription("canceled", at, at);
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

    /// A trial: checkout → created (trialing) → `trial_will_end` → invoice paid → active →
    /// past due → active again.
    pub fn trial_life(tenant: &str, price: &str, tag: &str, start: i64) -> Self {
        Self::new(tenant, price, tag, start)
            .checkout_completed(0)
            .subscription_event("created", 1, "trialing")
            .subscription_event("trial_will_end", 2, "trialing")
            .invoice("paid", 3)
            .subscription_event("updated", 3, "active")
            .subscription_event("updated", 4, "past_due")
            .subscription_event("updated", 5, "active")
    }

    /// The events, in the order they happened.
    pub fn events(&self) -> &[FakeEvent] {
        &self.events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object<T: miniserde::Deserialize>(event: &FakeEvent) -> T {
        let body: Value = serde_json::from_slice(&event.body).expect("json");
        let text = serde_json::to_string(&body["data"]["object"]).expect("text");
        miniserde::json::from_str(&text)
            .unwrap_or_else(|_| panic!("{} does not parse: {text}", event.event_type))
    }

    #[test]
    fn every_payload_parses_as_async_stripes_types() {
        let lives = [
            SubscriptionLife::full_life("t", "price_pro", "a", 1_700_000_000),
            SubscriptionLife::recovering_life("t", "price_pro", "a", 1_700_000_000),
            SubscriptionLife::trial_life("t", "price_pro", "a", 1_700_000_000),
        ];
        for event in lives.iter().flat_map(SubscriptionLife::events) {
            match event.event_type.split('.').next() {
                Some("checkout") => {
                    let session: stripe_shared::CheckoutSession = object(event);
                    assert_eq!(session.client_reference_id.as_deref(), Some("t"));
                    assert_eq!(session.customer.expect("customer").id().as_str(), "cus_a");
                }
                Some("customer") => {
                    let sub: stripe_shared::Subscription = object(event);
                    assert_eq!(sub.id.as_str(), "sub_a");
                    assert_eq!(sub.customer.id().as_str(), "cus_a");
                    let item = &sub.items.data[0];
                    assert_eq!(item.price.id.as_str(), "price_pro");
                    assert_eq!(
                        item.current_period_end - item.current_period_start,
                        30 * 86_400
                    );
                }
                Some("invoice") => {
                    let invoice: stripe_shared::Invoice = object(event);
                    assert_eq!(invoice.amount_due, 2000);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let answer =
            serde_json::to_string(&checkout_session_answer("cs_1", "https://x/y")).expect("text");
        let session: stripe_shared::CheckoutSession =
            miniserde::json::from_str(&answer).expect("a checkout answer");
        assert_eq!(session.url.as_deref(), Some("https://x/y"));
    }

    #[cfg(feature = "checkout")]
    #[test]
    fn the_portal_answer_parses_as_async_stripes_type() {
        let answer = serde_json::to_string(&portal_session_answer("bps_1", "cus_1", "https://x/p"))
            .expect("text");
        let session: stripe_billing::BillingPortalSession =
            miniserde::json::from_str(&answer).expect("a portal answer");
        assert_eq!(session.url, "https://x/p");
    }
}
