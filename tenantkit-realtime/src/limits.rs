//! The explicit bounds of every connection.

use std::time::Duration;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The bounds of the realtime server. Every one is explicit; tungstenite's own defaults
/// (128 KiB buffers per connection allocated eagerly, an unbounded write buffer, 64 MiB
/// messages) are never used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest message a client may send (default 64 KiB; larger closes with 1009).
    pub max_message_bytes: usize,
    /// Largest frame a client may send (default 16 KiB; larger closes with 1009).
    pub max_frame_bytes: usize,
    /// The read buffer and the write buffer's flush threshold per connection (default 4 KiB).
    pub buffer_bytes: usize,
    /// The per-connection queue of events not yet written (default 256 KiB): a client that
    /// falls further behind is closed with 4008 (slow consumer).
    pub queue_bytes: usize,
    /// Largest event frame the server publishes (default 64 KiB).
    pub max_event_bytes: usize,
    /// Subscriptions one connection may hold (default 100).
    pub max_subscriptions: usize,
    /// Connections one tenant may hold on this instance (default 1,000).
    pub max_connections_per_tenant: usize,
    /// Connections this instance holds (default 50,000).
    pub max_connections: usize,
    /// Messages a client may send per second, on average (default 20, bursts of twice that).
    pub messages_per_second: u32,
    /// How often the server pings (default 25 s).
    pub ping_every: Duration,
    /// A connection silent for this long (no message, no pong) is closed with 4009 (default
    /// 60 s).
    pub idle_timeout: Duration,
    /// A write that does not finish within this is abandoned and the connection dropped
    /// (default 10 s).
    pub write_timeout: Duration,
    /// How long an authorization answer is trusted before delivery checks it again (default
    /// 10 s); events marked `access_changed` make connections check at once.
    pub recheck_every: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            max_frame_bytes: 16 * 1024,
            buffer_bytes: 4 * 1024,
            queue_bytes: 256 * 1024,
            max_event_bytes: 64 * 1024,
            max_subscriptions: 100,
            max_connections_per_tenant: 1_000,
            max_connections: 50_000,
            messages_per_second: 20,
            ping_every: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            recheck_every: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// tungstenite's configuration for these limits.
    pub(crate) fn websocket_config(&self) -> WebSocketConfig {
        let buffer = self.buffer_bytes.max(1024);
        WebSocketConfig::default()
            .read_buffer_size(buffer)
            .write_buffer_size(buffer)
            // Room for one event frame beyond the flush threshold, and the close frame.
            .max_write_buffer_size(buffer + self.max_event_bytes.max(self.max_message_bytes) + 1024)
            .max_message_size(Some(self.max_message_bytes))
            .max_frame_size(Some(self.max_frame_bytes.min(self.max_message_bytes)))
    }
}
