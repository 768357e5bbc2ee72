//! `SmtpMailer`: delivery through an SMTP relay (lettre), behind the `smtp` feature.

use std::fmt;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor};

use crate::mailer::{Mailer, Message, SendFuture};
use crate::{Error, Result};

/// Sends mail through an SMTP server.
#[derive(Clone)]
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The transport holds the relay's credentials.
        f.debug_struct("SmtpMailer")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// A mailer for `url`: `smtps://user:pass@host:465` (implicit TLS),
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS), or `smtp://127.0.0.1:2525` for a
    /// local relay; messages come from `from` (`"Name <addr@example.com>"` or an address).
    ///
    /// # Errors
    /// [`Error::Mail`] for an unparsable URL or sender.
    pub fn from_url(url: &str, from: &str) -> Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| Error::Mail(format!("invalid SMTP URL: {e}")))?
            .build();
        let from = from
            .parse()
            .map_err(|e| Error::Mail(format!("invalid sender address: {e}")))?;
        Ok(Self { transport, from })
    }
}

impl Mailer for SmtpMailer {
    fn send(&self, message: Message) -> SendFuture<'_> {
        Box::pin(async move {
            let to: Mailbox = message
                .to
                .parse()
                .map_err(|e| Error::Mail(format!("invalid recipient: {e}")))?;
            let email = lettre::Message::builder()
                .from(self.from.clone())
                .to(to)
                .subject(message.subject)
                .header(ContentType::TEXT_PLAIN)
                .body(message.body)
                .map_err(|e| Error::Mail(format!("cannot build the message: {e}")))?;
            self.transport
                .send(email)
                .await
                .map_err(|e| Error::Mail(format!("SMTP delivery failed: {e}")))?;
            Ok(())
        })
    }
}
