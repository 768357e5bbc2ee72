//! Stripe-hosted pages (feature `checkout`): a Checkout session to subscribe to a plan and a
//! customer-portal session to manage the subscription, created through async-stripe's own
//! client (its API base is configurable, so tests point it at a local stand-in).
//!
//! The tenant is named in the Checkout session's `client_reference_id` and in the
//! metadata of the session and of the subscription it creates, so the signed events that
//! follow map the customer to the tenant (never an unsigned request). No transaction is held
//! open while Stripe answers.

use std::collections::HashMap;

use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
};
use stripe_shared::CheckoutSessionMode;
use tenantkit_core::{Database, Permission, Principal, TenantScope, with_conn};

use crate::{Error, PlanBook, Result};

/// A page on Stripe to send the user to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostedSession {
    /// The session's Stripe id (`cs_…` or `bps_…`).
    pub id: String,
    /// Its URL on Stripe.
    pub url: String,
}

/// Creates Checkout and portal sessions for tenants.
#[derive(Clone)]
pub struct StripeSessions {
    client: stripe::Client,
    book: PlanBook,
    return_url: String,
}

impl std::fmt::Debug for StripeSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the API key.
        f.debug_struct("StripeSessions")
            .field("return_url", &self.return_url)
            .finish_non_exhaustive()
    }
}

impl StripeSessions {
    /// Sessions with the secret `api_key` against `api_base` (Stripe's own API by default),
    /// for the plans of `book`; users come back to `return_url` (query `?checkout=success`
    /// or `?checkout=canceled` after Checkout).
    ///
    /// # Errors
    /// [`Error::Config`] for an unusable key or API base.
    pub fn new(
        api_key: &str,
        api_base: Option<&str>,
        book: PlanBook,
        return_url: &str,
    ) -> Result<Self> {
        if api_key.trim().is_empty() {
            return Err(Error::Config("the Stripe API key is empty".into()));
        }
        let mut builder = stripe::ClientBuilder::new(api_key)
            .timeout(std::time::Duration::from_secs(20))
            .app_info(
                "tenantkit",
                Some(env!("CARGO_PKG_VERSION").to_owned()),
                None,
            );
        if let Some(base) = api_base {
            builder = builder.url(base);
        }
        let client = builder
            .build()
            .map_err(|e| Error::Config(format!("Stripe client: {e}")))?;
        Ok(Self {
            client,
            book,
            return_url: return_url.trim_end_matches('/').to_owned(),
        })
    }

    /// The tenant's Stripe customer and whether it has a live subscription.
    async fn tenant_state(
        &self,
        db: &Database,
        scope: &TenantScope,
    ) -> Result<(Option<String>, bool)> {
        let mut tx = db.begin_read(scope).await?;
        let tenant = tx.tenant_id();
        let customer: Option<String> = with_conn!(&mut tx, |c| {
            sqlx::query_scalar("SELECT customer_id FROM billing_customers WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_optional(c)
                .await
        })?;
        let status = self.book.status(&mut tx).await?;
        tx.commit().await?;
        let live = matches!(
            status.status.as_str(),
            "active" | "trialing" | "past_due" | "unpaid" | "paused"
        );
        Ok((customer, live))
    }

    /// A Checkout session subscribing the owner's tenant to `plan` (its first Stripe
    /// price), prefilled with the owner's address (or for the tenant's existing customer).
    ///
    /// # Errors
    /// `forbidden` unless `owner` is the tenant's owner, `validation_failed` for a plan
    /// without a price, `conflict` when the tenant already has a live subscription (change
    /// plans in the portal), [`Error::Stripe`] when Stripe refuses or cannot be reached.
    pub async fn checkout(
        &self,
        db: &Database,
        owner: &Principal,
        plan: &str,
    ) -> Result<HostedSession> {
        owner.require(Permission::ManageBilling)?;
        let scope = TenantScope::of(owner);
        let price = self
            .book
            .plans()
            .price_of(plan)
            .ok_or_else(|| {
                tenantkit_core::Error::invalid("plan", "no plan of that name has a Stripe price")
            })?
            .to_owned();
        let (customer, live) = self.tenant_state(db, &scope).await?;
        if live {
            return Err(tenantkit_core::Error::Conflict(
                "the tenant already has a subscription: change plans in the billing portal".into(),
            )
            .into());
        }
        let tenant = scope.tenant_id();
        let metadata = HashMap::from([("tenant_id".to_owned(), tenant.to_string())]);
        let mut subscription = CreateCheckoutSessionSubscriptionData::new();
        subscription.metadata = Some(metadata.clone());
        let mut item = CreateCheckoutSessionLineItems::new();
        item.price = Some(price);
        item.quantity = Some(1);
        let mut request = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Subscription)
            .line_items(vec![item])
            .client_reference_id(tenant.to_string())
            .metadata(metadata)
            .subscription_data(subscription)
            .success_url(format!("{}?checkout=success", self.return_url))
            .cancel_url(format!("{}?checkout=canceled", self.return_url));
        request = match customer {
            Some(customer) => request.customer(customer),
            None => match db.find_user(owner.user_id()).await? {
                Some(user) => request.customer_email(user.email.to_string()),
                None => request,
            },
        };
        let session = request.send(&self.client).await.map_err(stripe_error)?;
        let url = session
            .url
            .ok_or_else(|| Error::Stripe("the Checkout session has no URL".into()))?;
        Ok(HostedSession {
            id: session.id.to_string(),
            url,
        })
    }

    /// A customer-portal session for the owner's tenant.
    ///
    /// # Errors
    /// `forbidden` unless `owner` is the tenant's owner, `conflict` when the tenant has no
    /// Stripe customer yet (subscribe first), [`Error::Stripe`] when Stripe refuses or
    /// cannot be reached.
    pub async fn portal(&self, db: &Database, owner: &Principal) -> Result<HostedSession> {
        owner.require(Permission::ManageBilling)?;
        let (customer, _) = self.tenant_state(db, &TenantScope::of(owner)).await?;
        let customer = customer.ok_or_else(|| {
            tenantkit_core::Error::Conflict(
                "the tenant has no Stripe customer yet: subscribe through checkout first".into(),
            )
        })?;
        let session = CreateBillingPortalSession::new()
            .customer(customer)
            .return_url(self.return_url.clone())
            .send(&self.client)
            .await
            .map_err(stripe_error)?;
        Ok(HostedSession {
            id: session.id.to_string(),
            url: session.url,
        })
    }
}

/// Stripe's refusal or silence, logged here (the answer says only that Stripe failed).
fn stripe_error(err: stripe::StripeError) -> Error {
    tracing::warn!(error = %err, "Stripe request failed");
    Error::Stripe(match err {
        stripe::StripeError::Stripe(_, status) => format!("Stripe answered {status}"),
        stripe::StripeError::Timeout => "Stripe did not answer in time".into(),
        _ => "Stripe could not be reached".into(),
    })
}
