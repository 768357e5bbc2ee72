//! `POST /v1/billing/checkout` and `/v1/billing/portal` through async-stripe's real client,
//! pointed at a local stand-in for Stripe's API that checks and records every request: the
//! owner gets Stripe-hosted URLs, the tenant is named in the Checkout session (so the signed
//! events that follow set its plan), nobody else may ask, and Stripe's failures are a 503
//! that carries no secret.

use reqwest::{Method, StatusCode};
use tenantkit_core::{Backend, Role};
use tenantkit_e2e::TestServer;
use tenantkit_e2e::stripe::{Recorded, stand_in};
use tenantkit_server::Config;

const SECRET: &str = "whsec_checkout";
const API_KEY: &str = "sk_test_checkout_never_shown";

fn plans_file() -> tempfile::NamedTempFile {
    let plans = tempfile::NamedTempFile::new().expect("plans file");
    std::fs::write(
        plans.path(),
        "[plans.pro]\nstripe_prices = [\"price_pro_monthly\", \"price_pro_yearly\"]\nseats = 10\n",
    )
    .expect("write plans");
    plans
}

fn form_value<'a>(request: &'a Recorded, key: &str) -> Option<&'a str> {
    request
        .form
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

async fn without_a_key_checkout_is_unavailable(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let owner = &server.world.a.principal;
    for path in ["/v1/billing/checkout", "/v1/billing/portal"] {
        let reply = server
            .call(
                Some(owner),
                Method::POST,
                path,
                Some(serde_json::json!({"plan": "pro"})),
            )
            .await;
        if path.ends_with("portal") {
            // The portal takes no body; the JSON one is ignored or refused, never a 500.
            assert_ne!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        }
        let reply = if path.ends_with("portal") {
            server.call(Some(owner), Method::POST, path, None).await
        } else {
            reply
        };
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.body
        );
        assert_eq!(reply.body["code"], "service_unavailable");
    }
}

async fn the_owner_gets_stripe_hosted_pages(backend: Backend) {
    let (stand_in, base) = stand_in().await;
    let plans = plans_file();
    let Some(server) = TestServer::start_with(
        backend,
        Config {
            stripe_webhook_secrets: vec![SECRET.into()],
            stripe_api_key: Some(API_KEY.into()),
            stripe_api_base: Some(base),
            plans_file: Some(plans.path().to_owned()),
            ..Config::default()
        },
    )
    .await
    else {
        return;
    };
    let owner = &server.world.a.principal;
    let tenant = server.world.a.tenant.id;
    let checkout = |principal: tenantkit_core::Principal, body: serde_json::Value| {
        let server = &server;
        async move {
            server
                .call(
                    Some(&principal),
                    Method::POST,
                    "/v1/billing/checkout",
                    Some(body),
                )
                .await
        }
    };

    // Only the owner: admins and members get 403, and Stripe is never asked.
    let (_, admin) = server.add_user(&server.world.a, Role::Admin).await;
    let (_, member) = server.add_user(&server.world.a, Role::Member).await;
    for who in [&admin, &member] {
        let reply = checkout(who.clone(), serde_json::json!({"plan": "pro"})).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
        let reply = server
            .call(Some(who), Method::POST, "/v1/billing/portal", None)
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    }
    // Bad plans: unknown, the free plan (no price), a malformed body.
    for body in [
        serde_json::json!({"plan": "gold"}),
        serde_json::json!({"plan": "free"}),
    ] {
        let reply = checkout(owner.clone(), body).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            reply.body
        );
        assert_eq!(reply.body["code"], "validation_failed");
    }
    for body in [
        serde_json::json!({"plan": 7}),
        serde_json::json!({"plan": "pro", "price": "price_cheap"}),
        serde_json::json!({}),
    ] {
        let reply = checkout(owner.clone(), body).await;
        assert!(reply.status.is_client_error(), "{}", reply.body);
    }
    // The portal before there is a customer: 409.
    let reply = server
        .call(Some(owner), Method::POST, "/v1/billing/portal", None)
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    assert!(stand_in.requests.lock().expect("lock").is_empty());

    // The owner subscribes: a Checkout URL, and the stand-in saw exactly Stripe's request.
    let reply = checkout(owner.clone(), serde_json::json!({"plan": "pro"})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["id"], "cs_test_1");
    assert_eq!(
        reply.body["url"],
        "https://checkout.stripe.test/c/pay/cs_test_1"
    );
    let sent = stand_in.requests.lock().expect("lock")[0].clone();
    assert_eq!(sent.path, "/v1/checkout/sessions");
    assert_eq!(sent.authorization, format!("Bearer {API_KEY}"));
    assert_eq!(sent.stripe_version, tenantkit_billing::API_VERSION);
    let tenant_text = tenant.to_string();
    for (key, value) in [
        ("mode", "subscription"),
        ("client_reference_id", tenant_text.as_str()),
        ("metadata[tenant_id]", tenant_text.as_str()),
        (
            "subscription_data[metadata][tenant_id]",
            tenant_text.as_str(),
        ),
        ("line_items[0][price]", "price_pro_monthly"),
        ("line_items[0][quantity]", "1"),
        ("customer_email", server.world.a.owner.email.as_str()),
    ] {
        assert_eq!(
            form_value(&sent, key),
            Some(value),
            "{key} in {:?}",
            sent.form
        );
    }
    assert!(
        form_value(&sent, "success_url").is_some_and(|u| u.ends_with("/billing?checkout=success")),
        "{:?}",
        sent.form
    );

    // Stripe's signed events follow (the session completes, the subscription starts).
    let life = tenantkit_billing::testing::SubscriptionLife::new(
        &tenant_text,
        "price_pro_monthly",
        "checkout",
        1_700_000_000,
    )
    .checkout_completed(0)
    .subscription_event("created", 1, "active");
    let now = tenantkit_core::now().unix_timestamp();
    let client = reqwest::Client::new();
    for event in life.events() {
        let reply = client
            .post(format!("{}/v1/billing/stripe/webhook", server.base_url))
            .header("stripe-signature", event.signature(SECRET, now))
            .header("content-type", "application/json")
            .body(event.body.clone())
            .send()
            .await
            .expect("deliver");
        assert_eq!(reply.status(), StatusCode::OK);
    }
    for _ in 0..600 {
        let reply = server
            .call(Some(owner), Method::GET, "/v1/billing", None)
            .await;
        if reply.body["plan"] == "pro" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Subscribed: a second checkout is refused (change plans in the portal) ...
    let reply = checkout(owner.clone(), serde_json::json!({"plan": "pro"})).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    // ... and the portal opens for the tenant's customer.
    let reply = server
        .call(Some(owner), Method::POST, "/v1/billing/portal", None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body["url"],
        "https://billing.stripe.test/p/session/test_1"
    );
    let sent = stand_in
        .requests
        .lock()
        .expect("lock")
        .last()
        .cloned()
        .expect("a request");
    assert_eq!(sent.path, "/v1/billing_portal/sessions");
    assert_eq!(form_value(&sent, "customer"), Some("cus_checkout"));
    assert!(form_value(&sent, "return_url").is_some_and(|u| u.ends_with("/billing")));

    // Stripe refuses or fails: 503, and neither the key nor Stripe's message is answered.
    for status in [402, 500] {
        *stand_in.fail_with.lock().expect("lock") = Some(status);
        let reply = server
            .call(Some(owner), Method::POST, "/v1/billing/portal", None)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.body
        );
        assert_eq!(reply.body["code"], "service_unavailable");
        let text = reply.body.to_string();
        assert!(
            !text.contains(API_KEY) && !text.contains("declined"),
            "{text}"
        );
    }
}

async fn an_unreachable_stripe_is_a_503(backend: Backend) {
    // A port nobody listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let plans = plans_file();
    let Some(server) = TestServer::start_with(
        backend,
        Config {
            stripe_api_key: Some(API_KEY.into()),
            stripe_api_base: Some(format!("http://127.0.0.1:{port}/")),
            plans_file: Some(plans.path().to_owned()),
            ..Config::default()
        },
    )
    .await
    else {
        return;
    };
    let reply = server
        .call(
            Some(&server.world.a.principal),
            Method::POST,
            "/v1/billing/checkout",
            Some(serde_json::json!({"plan": "pro"})),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert!(!reply.body.to_string().contains(API_KEY));
}

tenantkit_core::backend_tests!(
    fixture = tenantkit_core::testing::backend;
    without_a_key_checkout_is_unavailable, the_owner_gets_stripe_hosted_pages,
    an_unreachable_stripe_is_a_503
);
