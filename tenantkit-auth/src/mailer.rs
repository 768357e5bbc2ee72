//! Sending email: the `Mailer` trait, a development outbox and an in-memory mailer.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;

use serde::Serialize;

use crate::{Error, Result};

/// One email.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// The recipient.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// The plain-text body (may contain a secret link: never log it).
    pub body: String,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body carries single-use tokens; it stays out of debug output and logs.
        f.debug_struct("Message")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// The future a [`Mailer`] returns (boxed so mailers can be used as `dyn Mailer`).
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// Delivers email. Implement it for your provider (an SMTP relay, an HTTP API).
pub trait Mailer: fmt::Debug + Send + Sync + 'static {
    /// Sends `message`.
    fn send(&self, message: Message) -> SendFuture<'_>;
}

/// Development mailer: writes each message as JSON into a folder and logs where (never the
/// body, which holds a secret link).
#[derive(Debug, Clone)]
pub struct OutboxMailer {
    dir: PathBuf,
}

impl OutboxMailer {
    /// Messages go to `dir`, created when needed.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

impl Mailer for OutboxMailer {
    fn send(&self, message: Message) -> SendFuture<'_> {
        Box::pin(async move {
            let failed = |e: std::io::Error| Error::Mail(e.to_string());
            // The messages hold live tokens: only the server's user may read them.
            let mut dir = tokio::fs::DirBuilder::new();
            dir.recursive(true);
            #[cfg(unix)]
            dir.mode(0o700);
            dir.create(&self.dir).await.map_err(failed)?;
            let name = format!("{}.json", uuid::Uuid::now_v7());
            let path = self.dir.join(name);
            let json =
                serde_json::to_vec_pretty(&message).map_err(|e| Error::Mail(e.to_string()))?;
            let mut file = tokio::fs::OpenOptions::new();
            file.write(true).create_new(true);
            #[cfg(unix)]
            file.mode(0o600);
            let mut file = file.open(&path).await.map_err(failed)?;
            tokio::io::AsyncWriteExt::write_all(&mut file, &json)
                .await
                .map_err(failed)?;
            tokio::io::AsyncWriteExt::flush(&mut file)
                .await
                .map_err(failed)?;
            tracing::info!(to = %message.to, subject = %message.subject, file = %path.display(), "email written to the outbox");
            Ok(())
        })
    }
}

/// A mailer that sends nothing: it logs that a message to whom was dropped (never its body).
/// The default of [`crate::flows::AuthFlows`] until a real mailer is set.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogMailer;

impl Mailer for LogMailer {
    fn send(&self, message: Message) -> SendFuture<'_> {
        tracing::warn!(to = %message.to, subject = %message.subject, "no mailer configured; email dropped");
        Box::pin(async { Ok(()) })
    }
}

/// Keeps messages in memory, for tests.
#[derive(Debug, Default)]
pub struct MemoryMailer {
    sent: Mutex<Vec<Message>>,
}

impl MemoryMailer {
    /// An empty mailbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every message sent so far.
    pub fn sent(&self) -> Vec<Message> {
        self.sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Mailer for MemoryMailer {
    fn send(&self, message: Message) -> SendFuture<'_> {
        self.sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(message);
        Box::pin(async { Ok(()) })
    }
}

/// A single-use token to mail: 256 random bits, base64url. Only [`OneTimeToken::hash`] is
/// stored.
#[derive(Clone, PartialEq, Eq)]
pub struct OneTimeToken(String);

impl OneTimeToken {
    /// A fresh random token.
    pub fn generate() -> Self {
        use base64::Engine as _;
        let mut bytes = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Wraps a token a client sent back.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token text, for the link in the email.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What is stored and looked up: SHA-256 of the token.
    pub fn hash(&self) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(self.0.as_bytes()).into()
    }
}

impl fmt::Debug for OneTimeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OneTimeToken(..)")
    }
}
