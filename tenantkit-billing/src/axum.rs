//! axum integration (feature `axum`): `IntoResponse` for this crate's [`Error`] (its problem,
//! `application/problem+json` with a stable `code`), and, with `sqlite` or `postgres`, the
//! Stripe webhook endpoint as a route to mount: [`webhook_route`].
//!
//! The endpoint reads at most [`Billing::body_limit`](crate::Billing::body_limit) bytes of
//! the body, verifies `Stripe-Signature` on the raw bytes, stores the event in the inbox and
//! answers `200 {"received": true}` only once that is committed (a redelivery too, storing
//! nothing); handlers run later, in the [`Worker`](crate::Worker). Refusals store nothing:
//!
//! | refusal | status | `code` |
//! | --- | --- | --- |
//! | no, malformed, stale or forged `Stripe-Signature` (or no secret configured) | 400 | `invalid_signature` |
//! | a body over the limit | 413 | `payload_too_large` |
//! | a signed body that is not a Stripe event (not JSON, no `evt_` id, …) | 400 | `bad_request` |
//! | an unreadable body | 400 | `bad_request` |
//! | the database failing | 500/503 | tenantkit-core's code |
#![cfg_attr(
    any(feature = "sqlite", feature = "postgres"),
    doc = r##"
```
use axum::Router;
use tenantkit_billing::{Billing, WebhookVerifier};
use tenantkit_core::Database;

fn app(db: Database) -> Router {
    let verifier = WebhookVerifier::new(&["whsec_..."]).ok();
    Router::new().route(
        "/stripe/webhook",
        tenantkit_billing::axum::webhook_route(Billing::new(db, verifier)),
    )
}
# let _ = app;
```
"##
)]

use axum::response::{IntoResponse, Response};
use tenantkit_core::Problem;

use crate::Error;

impl IntoResponse for Error {
    /// The error's problem: its status and stable code, as `application/problem+json`.
    fn into_response(self) -> Response {
        Problem::from(&self).into_response()
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use endpoint::{Received, receive, webhook_route};

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod endpoint {
    use axum::Json;
    use axum::body::Body;
    use axum::http::HeaderMap;
    use axum::routing::{MethodRouter, post};
    use serde::Serialize;

    use crate::{Billing, Error, Result};

    /// The answer to a stored delivery: `{"received": true}`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
    pub struct Received {
        /// Always `true`: the event is durably stored (or already was).
        pub received: bool,
    }

    /// The webhook endpoint as a `POST` route for any router state: mount it at the path
    /// Stripe is configured to call (see the [module documentation](super)).
    pub fn webhook_route<S>(billing: Billing) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        post(move |headers: HeaderMap, body: Body| {
            let billing = billing.clone();
            async move { receive(&billing, &headers, body).await }
        })
    }

    /// The endpoint as a function, for a handler of one's own (another route shape, an
    /// OpenAPI annotation): reads at most [`Billing::body_limit`] bytes of `body`, then
    /// [`Billing::receive`].
    ///
    /// # Errors
    /// [`Error::TooLarge`], [`Error::Unreadable`], and those of [`Billing::receive`].
    pub async fn receive(
        billing: &Billing,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Json<Received>> {
        let bytes = axum::body::to_bytes(body, billing.body_limit())
            .await
            .map_err(|err| {
                if over_limit(&err) {
                    Error::TooLarge
                } else {
                    Error::Unreadable
                }
            })?;
        let signature = headers
            .get("stripe-signature")
            .map(|value| value.as_bytes());
        billing.receive(signature, &bytes).await?;
        Ok(Json(Received { received: true }))
    }

    /// Whether reading failed on a length limit (this one's, or a limit layer's in front).
    fn over_limit(err: &axum::Error) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(inner) = cause {
            if inner.is::<http_body_util::LengthLimitError>() {
                return true;
            }
            cause = inner.source();
        }
        false
    }
}
