//! Connection-level defences of the serve loop: a cap on the connections one client network
//! may hold, and a deadline on answers a client does not read.
//!
//! hyper has a header timeout (which also closes idle keep-alive connections) but no
//! deadline on writing: a client that stops reading a large answer would hold its connection
//! and a slot forever. Body-level deadlines live with the routes (the request timeout, the
//! storage transfer limits).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tenantkit_auth::ClientNetwork;
use tenantkit_core::TrustedProxies;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Counts open connections per client network and refuses those over the cap.
#[derive(Debug)]
pub(crate) struct ClientConnections {
    per_client: usize,
    proxies: TrustedProxies,
    open: Mutex<HashMap<ClientNetwork, usize>>,
}

/// One admitted connection's place in its network's count, given back when dropped.
#[derive(Debug)]
pub(crate) struct ClientSlot {
    owner: Arc<ClientConnections>,
    network: Option<ClientNetwork>,
}

impl ClientConnections {
    /// At most `per_client` connections per client network; `proxies` are exempt.
    pub(crate) fn new(per_client: usize, proxies: TrustedProxies) -> Arc<Self> {
        Arc::new(Self {
            per_client: per_client.max(1),
            proxies,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection from `peer`, or `None` when its network holds the cap already.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<ClientSlot> {
        // A trusted proxy speaks for many clients; its own limits apply upstream.
        if self.proxies.trusts(peer) {
            return Some(ClientSlot {
                owner: self.clone(),
                network: None,
            });
        }
        let network = ClientNetwork::of(peer);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(network).or_insert(0);
        if *count >= self.per_client {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            owner: self.clone(),
            network: Some(network),
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let Some(network) = self.network else {
            return;
        };
        let mut open = self
            .owner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&network) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // The map only holds networks with open connections: it cannot grow unbounded.
                open.remove(&network);
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection whose writes fail with [`io::ErrorKind::TimedOut`] once they have made no
    /// progress for `timeout` (the client stopped reading). Reads pass through unchanged.
    #[derive(Debug)]
    pub(crate) struct WriteDeadline<T> {
        #[pin]
        io: T,
        timeout: Duration,
        stalled: Option<Pin<Box<Sleep>>>,
    }
}

impl<T> WriteDeadline<T> {
    /// `io`, whose writes may stall for at most `timeout`.
    pub(crate) fn new(io: T, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            stalled: None,
        }
    }
}

/// Passes a write's progress through, starting the stall clock when it waits and stopping it
/// when it moves; a stall past the timeout is an error.
fn watch<R>(
    stalled: &mut Option<Pin<Box<Sleep>>>,
    timeout: Duration,
    cx: &mut Context<'_>,
    poll: Poll<io::Result<R>>,
) -> Poll<io::Result<R>> {
    match poll {
        Poll::Ready(result) => {
            *stalled = None;
            Poll::Ready(result)
        }
        Poll::Pending => {
            let sleep = stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
            match sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not read the answer in time",
                ))),
                Poll::Pending => Poll::Pending,
            }
        }
    }
}

impl<T: AsyncRead> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let poll = this.io.poll_write(cx, buf);
        watch(this.stalled, *this.timeout, cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let poll = this.io.poll_write_vectored(cx, bufs);
        watch(this.stalled, *this.timeout, cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let poll = this.io.poll_flush(cx);
        watch(this.stalled, *this.timeout, cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let poll = this.io.poll_shutdown(cx);
        watch(this.stalled, *this.timeout, cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[test]
    fn one_network_cannot_take_every_slot_and_slots_come_back() {
        let limits = ClientConnections::new(2, TrustedProxies::default());
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let first = limits.admit(a).expect("first");
        let _second = limits.admit(a).expect("second");
        assert!(limits.admit(a).is_none(), "a third from one address");
        assert!(limits.admit(b).is_some(), "another address is not affected");
        drop(first);
        assert!(limits.admit(a).is_some(), "a slot comes back when dropped");
    }

    #[test]
    fn ipv6_clients_count_by_their_64_and_proxies_are_exempt() {
        let proxies: TrustedProxies = "10.0.0.1".parse().expect("proxies");
        let limits = ClientConnections::new(1, proxies);
        let _one = limits
            .admit("2001:db8::1".parse().expect("ip"))
            .expect("one");
        assert!(limits.admit("2001:db8::2".parse().expect("ip")).is_none());
        let proxy: IpAddr = "10.0.0.1".parse().expect("ip");
        let _p1 = limits.admit(proxy).expect("proxy");
        let _p2 = limits.admit(proxy).expect("proxy again");
        drop(_one);
        assert!(
            limits.open.lock().expect("lock").is_empty(),
            "no entry kept"
        );
    }

    #[tokio::test]
    async fn a_write_that_makes_no_progress_times_out() {
        // A duplex pipe whose reader never reads: writes stall once its buffer is full. (The
        // test can only take longer on a busy machine, never fail because of it.)
        let (client, _server_side) = tokio::io::duplex(64);
        let mut io = WriteDeadline::new(client, Duration::from_millis(50));
        let result = io.write_all(&[0u8; 1024]).await;
        let err = result.expect_err("a stalled write fails");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn progress_stops_the_stall_clock() {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut stalled = None;
        let timeout = Duration::from_secs(3600);
        let poll: Poll<io::Result<usize>> = Poll::Pending;
        assert!(watch(&mut stalled, timeout, &mut cx, poll).is_pending());
        assert!(stalled.is_some(), "a waiting write starts the clock");
        let poll: Poll<io::Result<usize>> = Poll::Ready(Ok(10));
        assert!(matches!(
            watch(&mut stalled, timeout, &mut cx, poll),
            Poll::Ready(Ok(10))
        ));
        assert!(
            stalled.is_none(),
            "progress stops it: the next stall starts afresh"
        );
    }
}
