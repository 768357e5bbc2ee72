//! Waking relays: [`Database::listen`], the [`Listener`] and its [`Notification`]s, and
//! SQLite's in-process notifier.

#[cfg(feature = "sqlite")]
use std::sync::Arc;

#[cfg(feature = "sqlite")]
use tokio::sync::broadcast;

#[cfg(feature = "sqlite")]
use super::LOCAL_CAPACITY;
use crate::db::Pool;
use crate::{Backend, Database, Error, Result};

impl Database {
    /// Listens for notifications on `channel` ([`OUTBOX_CHANNEL`](super::OUTBOX_CHANNEL) for outbox inserts) until
    /// the [`Listener`] is dropped.
    ///
    /// - PostgreSQL: `LISTEN` on a connection of the listener's own (outside the pool's
    ///   [`DatabaseOptions::max_connections`](crate::DatabaseOptions)); it hears every
    ///   `NOTIFY` on the channel, from any instance, delivered when the notifying transaction
    ///   commits, never for a rolled-back one. A lost connection is re-established, and
    ///   reported as [`Notification::Missed`].
    /// - SQLite: an in-process channel, woken after the commit of an outbox insert made
    ///   through this [`Database`] or a clone of it; other processes writing the same file
    ///   are not heard. A listener that falls more than 1,024 notifications behind gets
    ///   [`Notification::Missed`].
    ///
    /// Notifications are only hints that something is new: relays still claim on a timer,
    /// and at once after [`Notification::Missed`].
    ///
    /// # Errors
    /// [`Error::Config`] for an empty channel name or one longer than 63 bytes;
    /// [`Error::Database`] when the listening connection cannot be opened.
    pub async fn listen(&self, channel: &str) -> Result<Listener> {
        if channel.is_empty() || channel.len() > 63 || channel.chars().any(char::is_control) {
            return Err(Error::Config(format!(
                "a notification channel is 1 to 63 bytes without control characters, not {channel:?}"
            )));
        }
        let inner = match self.pool() {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pools) => ListenerInner::Local {
                channel: channel.into(),
                receiver: pools.writer.notifier().sender.subscribe(),
            },
            #[cfg(feature = "postgres")]
            Pool::Postgres(connections) => {
                let mut listener = connections.listener().await?;
                listener.listen(channel).await?;
                ListenerInner::Postgres(Box::new(listener))
            }
        };
        Ok(Listener { inner })
    }
}

/// What a [`Listener`] hears.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notification {
    /// A notification on the listened channel.
    Message {
        /// The channel.
        channel: String,
        /// Its payload (for [`OUTBOX_CHANNEL`](super::OUTBOX_CHANNEL): the topic of the messages written).
        payload: String,
    },
    /// Notifications may have been lost (PostgreSQL: the listening connection was lost and
    /// re-established; SQLite: the listener fell behind): look at the table now.
    Missed,
}

/// Notifications of one channel, from [`Database::listen`].
pub struct Listener {
    inner: ListenerInner,
}

enum ListenerInner {
    #[cfg(feature = "sqlite")]
    Local {
        channel: Arc<str>,
        receiver: broadcast::Receiver<LocalNote>,
    },
    #[cfg(feature = "postgres")]
    Postgres(Box<sqlx::postgres::PgListener>),
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match &self.inner {
            #[cfg(feature = "sqlite")]
            ListenerInner::Local { .. } => Backend::Sqlite,
            #[cfg(feature = "postgres")]
            ListenerInner::Postgres(_) => Backend::Postgres,
        };
        f.debug_struct("Listener")
            .field("backend", &backend)
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// Waits for the next notification. Put a timeout around it (`tokio::time::timeout`) and
    /// look at the table when it elapses: a relay must not depend on notifications alone. A
    /// wait cancelled on PostgreSQL may drop a notification that was arriving, so after a
    /// timeout, look at the table as after [`Notification::Missed`].
    ///
    /// # Errors
    /// [`Error::Database`] when the PostgreSQL connection cannot be re-established (the
    /// next call tries again); [`Error::Config`] on SQLite once the database is gone.
    pub async fn recv(&mut self) -> Result<Notification> {
        match &mut self.inner {
            #[cfg(feature = "sqlite")]
            ListenerInner::Local { channel, receiver } => loop {
                match receiver.recv().await {
                    Ok(note) if note.channel == *channel => {
                        return Ok(Notification::Message {
                            channel: note.channel.to_string(),
                            payload: note.payload.to_string(),
                        });
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return Ok(Notification::Missed),
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(Error::Config("the database was dropped".to_owned()));
                    }
                }
            },
            #[cfg(feature = "postgres")]
            ListenerInner::Postgres(listener) => Ok(match listener.try_recv().await? {
                Some(note) => Notification::Message {
                    channel: note.channel().to_owned(),
                    payload: note.payload().to_owned(),
                },
                None => Notification::Missed,
            }),
        }
    }
}

/// One in-process notification.
#[cfg(feature = "sqlite")]
#[derive(Debug, Clone)]
pub(crate) struct LocalNote {
    channel: Arc<str>,
    payload: Arc<str>,
}

/// SQLite's stand-in for `NOTIFY`: a broadcast to this process's listeners.
#[cfg(feature = "sqlite")]
#[derive(Debug, Clone)]
pub(crate) struct LocalNotifier {
    sender: broadcast::Sender<LocalNote>,
}

#[cfg(feature = "sqlite")]
impl Default for LocalNotifier {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(LOCAL_CAPACITY).0,
        }
    }
}

#[cfg(feature = "sqlite")]
impl LocalNotifier {
    /// Wakes the listeners of `channel` (none listening is fine).
    pub(crate) fn notify(&self, channel: &str, payload: &str) {
        let _ = self.sender.send(LocalNote {
            channel: channel.into(),
            payload: payload.into(),
        });
    }
}
