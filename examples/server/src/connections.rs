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

use tenantkit_core::TrustedProxies;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Counts open connections per client network and refuses those over the cap.
///
/// A client network is an IPv4 address or an IPv6 /64 (as for rate limits). IPv6 sites get
/// whole prefixes (a /56 at home, a /48 from a tunnel broker, for free), so every /48 is also
/// capped, at four times the per-client cap: one site cannot take every slot by spreading
/// over its /64s.
#[derive(Debug)]
pub(crate) struct ClientConnections {
    per_client: usize,
    proxies: TrustedProxies,
    open: Mutex<HashMap<Prefix, usize>>,
}

/// An address prefix connections are counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Prefix {
    /// One IPv4 address (IPv4-mapped IPv6 addresses count as IPv4).
    V4(u32),
    /// An IPv6 /64: one client.
    V6Client(u64),
    /// An IPv6 /48: one site.
    V6Site(u64),
}

/// How many more connections an IPv6 site (/48) may hold than one of its clients (/64).
const SITE_FACTOR: usize = 4;

impl Prefix {
    /// The prefixes `ip` counts under, with each one's cap for a per-client cap of `cap`.
    fn of(ip: IpAddr, cap: usize) -> Vec<(Prefix, usize)> {
        match ip.to_canonical() {
            IpAddr::V4(v4) => vec![(Prefix::V4(u32::from(v4)), cap)],
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let client = u64::try_from(bits >> 64).unwrap_or(u64::MAX);
                let site = u64::try_from(bits >> 80).unwrap_or(u64::MAX);
                vec![
                    (Prefix::V6Client(client), cap),
                    (Prefix::V6Site(site), cap.saturating_mul(SITE_FACTOR)),
                ]
            }
        }
    }
}

/// One admitted connection's place in its prefixes' counts, given back when dropped.
#[derive(Debug)]
pub(crate) struct ClientSlot {
    owner: Arc<ClientConnections>,
    prefixes: Vec<Prefix>,
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

    /// A slot for a connection from `peer`, or `None` when its network (or its IPv6 site)
    /// holds its cap already.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<ClientSlot> {
        // A trusted proxy speaks for many clients; its own limits apply upstream.
        if self.proxies.trusts(peer) {
            return Some(ClientSlot {
                owner: self.clone(),
                prefixes: Vec::new(),
            });
        }
        let limits = Prefix::of(peer, self.per_client);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let full = limits
            .iter()
            .any(|(prefix, cap)| open.get(prefix).is_some_and(|count| count >= cap));
        if full {
            return None;
        }
        for (prefix, _) in &limits {
            *open.entry(*prefix).or_insert(0) += 1;
        }
        Some(ClientSlot {
            owner: self.clone(),
            prefixes: limits.into_iter().map(|(prefix, _)| prefix).collect(),
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if self.prefixes.is_empty() {
            return;
        }
        let mut open = self
            .owner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for prefix in &self.prefixes {
            if let Some(count) = open.get_mut(prefix) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    // Only prefixes with open connections are kept: the map cannot grow
                    // unbounded.
                    open.remove(prefix);
                }
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
    fn an_ipv6_site_cannot_take_every_slot_through_its_64s() {
        let limits = ClientConnections::new(2, TrustedProxies::default());
        let mut held = Vec::new();
        // Four /64s of one /48, two connections each: the site's cap (4 × 2) is reached.
        for subnet in 0..4 {
            for host in 1..=2 {
                let ip: IpAddr = format!("2001:db8:1:{subnet}::{host}").parse().expect("ip");
                held.push(limits.admit(ip).expect("within the caps"));
            }
        }
        let fifth_subnet: IpAddr = "2001:db8:1:4::1".parse().expect("ip");
        assert!(
            limits.admit(fifth_subnet).is_none(),
            "a fifth /64 of the same /48"
        );
        let other_site: IpAddr = "2001:db8:2::1".parse().expect("ip");
        assert!(
            limits.admit(other_site).is_some(),
            "another /48 is not affected"
        );
        drop(held);
        assert!(limits.admit(fifth_subnet).is_some(), "slots come back");
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
