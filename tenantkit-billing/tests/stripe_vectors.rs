//! The signature matrix, with vectors made by Stripe's own library (PyPI `stripe`, run by the
//! test script): our verdict agrees with `stripe.WebhookSignature.verify_header` on every
//! case but two deliberate ones (a timestamp beyond the tolerance in the future, which
//! Stripe's library does not check, and a body over this endpoint's limit), and nothing is
//! stored for a refused delivery. async-stripe's own verifier and event parser
//! (`stripe_webhook::Webhook`) agree with ours on every case but the oversize body (it has no
//! limit), and parse the accepted body into its typed `invoice.paid` event.

use stripe_webhook::{EventObject, Webhook, WebhookError};
use tenantkit_billing::testing::SubscriptionLife;
use tenantkit_billing::{Billing, Error, SignatureError, WebhookVerifier};
use tenantkit_core::testing::{TestDb, required_service};
use tenantkit_core::{Backend, Migrations};

const SECRET: &str = "whsec_vectors_primary";
const OTHER: &str = "whsec_vectors_rotated";
const LIMIT: usize = 64 * 1024;

async fn db(backend: Backend) -> Option<TestDb> {
    TestDb::new(
        backend,
        &Migrations::new().with(tenantkit_billing::migrations()),
    )
    .await
}

/// async-stripe's verdict: its `construct_event` with either secret (a rotation).
fn async_stripe(header: Option<&str>, body: &str, now: i64) -> Result<EventObject, WebhookError> {
    let header = header.ok_or(WebhookError::BadSignature)?;
    Webhook::construct_event_with_timestamp(body, header, SECRET, now)
        .or_else(|_| Webhook::construct_event_with_timestamp(body, header, OTHER, now))
        .map(|event| event.data.object)
}

fn vectors(python: &str, now: i64) -> Vec<serde_json::Value> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/vectors/stripe_vectors.py"
    );
    // A realistic event (the sequencer's), so async-stripe's parser takes it too.
    let life =
        SubscriptionLife::new("tenant", "price_pro", "vector", 1_700_000_000).invoice("paid", 0);
    let event = &life.events()[0];
    assert_eq!(event.id, "evt_vector_1");
    let body = String::from_utf8(event.body.clone()).expect("utf-8");
    let input = serde_json::json!({
        "secret": SECRET, "other_secret": OTHER, "body": body, "limit": LIMIT,
        "now": now,
    });
    let mut child = std::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python with stripe");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(input.to_string().as_bytes())
            .expect("write the spec");
    }
    let out = child.wait_with_output().expect("vectors");
    assert!(out.status.success(), "the vector script failed");
    serde_json::from_slice(&out.stdout).expect("vector JSON")
}

async fn our_verdicts_agree_with_stripes(test_db: TestDb) {
    let Some(python) = required_service("TENANTKIT_TEST_STRIPE_PYTHON", "Stripe vector") else {
        return;
    };
    // One clock for Stripe's verdicts and ours: the result never depends on how long the
    // vector script took.
    let now = tenantkit_core::now();
    let cases = vectors(&python, now.unix_timestamp());
    assert_eq!(cases.len(), 12);
    let billing = Billing::new(
        test_db.db.clone(),
        Some(WebhookVerifier::new(&[SECRET, OTHER]).expect("verifier")),
    )
    .with_body_limit(LIMIT);
    for case in &cases {
        let name = case["name"].as_str().expect("name");
        let header = case["header"].as_str().map(str::as_bytes);
        let body = case["body"].as_str().expect("body").as_bytes();
        let stripe_valid = case["stripe_valid"].as_bool().expect("verdict");
        let ours = billing.receive_at(header, body, now).await;
        let theirs = async_stripe(
            case["header"].as_str(),
            case["body"].as_str().expect("body"),
            now.unix_timestamp(),
        );
        if name == "oversize_body" {
            assert!(theirs.is_ok(), "{name}: async-stripe has no body limit");
        } else {
            assert_eq!(
                theirs.is_ok(),
                ours.is_ok(),
                "{name}: async-stripe says {:?}, we say {ours:?}",
                theirs.as_ref().err()
            );
        }
        if let (Ok(EventObject::InvoicePaid(invoice)), Ok(_)) = (&theirs, &ours) {
            assert_eq!(invoice.amount_paid, 2000);
        } else if ours.is_ok() {
            panic!("{name}: async-stripe did not parse a typed invoice.paid");
        }
        match name {
            "valid" | "several_v1_one_valid" | "rotated_secret" => {
                assert!(stripe_valid, "{name}: stripe refused its own vector");
                match &ours {
                    Ok(stored) => assert_eq!(stored.event_id, "evt_vector_1"),
                    Err(e) => panic!("{name}: refused: {e}"),
                }
            }
            "in_future" => {
                // Stripe's library checks only the past side of the tolerance; a timestamp
                // far in the future (a pre-signed replay) is refused here on purpose.
                assert!(stripe_valid, "{name}");
                assert!(
                    matches!(ours, Err(Error::Signature(SignatureError::InFuture))),
                    "{name}: {ours:?}"
                );
            }
            "oversize_body" => {
                // Genuine, but over this endpoint's limit: refused before verifying.
                assert!(stripe_valid);
                assert!(matches!(ours, Err(Error::TooLarge)), "{name}: {ours:?}");
            }
            _ => {
                assert!(!stripe_valid, "{name}: stripe accepted it");
                assert!(matches!(ours, Err(Error::Signature(_))), "{name}: {ours:?}");
            }
        }
        if name == "missing_header" {
            assert!(matches!(
                ours,
                Err(Error::Signature(SignatureError::Missing))
            ));
        }
        if name == "too_old" {
            assert!(matches!(
                ours,
                Err(Error::Signature(SignatureError::TooOld))
            ));
        }
        if name == "in_future" {
            assert!(matches!(
                ours,
                Err(Error::Signature(SignatureError::InFuture))
            ));
        }
    }
    // Exactly the one event of the accepted deliveries is stored (the duplicates were
    // no-ops); nothing from any refused one.
    let stored = billing.inbox().list(None, 100).await.expect("list");
    assert_eq!(stored.len(), 1, "{stored:?}");
}

tenantkit_core::backend_tests!(
    fixture = db;
    our_verdicts_agree_with_stripes
);
