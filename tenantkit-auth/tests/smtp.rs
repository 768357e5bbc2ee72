//! `SmtpMailer` against a real SMTP server (aiosmtpd, started by scripts/with-services.sh).
#![cfg(feature = "smtp")]

use std::path::PathBuf;
use std::time::Duration;

use tenantkit_auth::{Error, Mailer, Message, SmtpMailer};
use tenantkit_core::testing::required_service;

fn sink() -> Option<(String, PathBuf)> {
    let url = required_service("TENANTKIT_TEST_SMTP_URL", "SMTP")?;
    let maildir = required_service("TENANTKIT_TEST_SMTP_MAILDIR", "SMTP")?;
    Some((url, PathBuf::from(maildir)))
}

#[tokio::test]
async fn messages_are_delivered_through_a_real_smtp_server() {
    let Some((url, maildir)) = sink() else { return };
    let mailer = SmtpMailer::from_url(&url, "tenantkit <noreply@tenantkit.test>").expect("mailer");
    let marker = uuid_like();
    mailer
        .send(Message {
            to: "ada@example.com".into(),
            subject: format!("Reset your password {marker}"),
            body: format!("Open https://app.test/reset-password?token={marker}\n"),
        })
        .await
        .expect("send");
    let new = maildir.join("new");
    for _ in 0..600 {
        for entry in std::fs::read_dir(&new).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if text.contains(&marker) {
                assert!(text.contains("X-RcptTo: ada@example.com"), "{text}");
                assert!(
                    text.contains("From: tenantkit <noreply@tenantkit.test>"),
                    "{text}"
                );
                assert!(text.contains(&format!("token={marker}")), "{text}");
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the message did not arrive in {}", new.display());
}

#[tokio::test]
async fn delivery_failures_are_errors_not_panics() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mailer = SmtpMailer::from_url(
        &format!("smtp://127.0.0.1:{closed}"),
        "noreply@tenantkit.test",
    )
    .expect("mailer");
    let message = Message {
        to: "ada@example.com".into(),
        subject: "s".into(),
        body: "b".into(),
    };
    assert!(matches!(
        mailer.send(message.clone()).await,
        Err(Error::Mail(_))
    ));
    let bad_recipient = Message {
        to: "not an address".into(),
        ..message
    };
    assert!(matches!(
        mailer.send(bad_recipient).await,
        Err(Error::Mail(_))
    ));
    assert!(matches!(
        SmtpMailer::from_url("ftp://nope", "x@y.z"),
        Err(Error::Mail(_))
    ));
    assert!(matches!(
        SmtpMailer::from_url("smtp://127.0.0.1:25", "not a sender"),
        Err(Error::Mail(_))
    ));
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_nanos()
    )
}
