//! Who is calling: the client's address behind trusted reverse proxies.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use http::HeaderMap;
use ipnet::IpNet;

/// The forwarding header the trusted proxies write: only this one is read, the other is
/// ignored entirely.
///
/// It must be the header the proxies *append to*: nginx (`$proxy_add_x_forwarded_for`), AWS
/// ALB, Caddy and most load balancers append the peer to `X-Forwarded-For` and pass any
/// `Forwarded` header a client sent through untouched. Believing `Forwarded` behind such a
/// proxy would let every client name its own address. Choose [`ForwardedHeader::Forwarded`]
/// only for a proxy that appends to RFC 7239 `Forwarded` (and then ignores `X-Forwarded-For`).
///
/// Parses from `x-forwarded-for` or `forwarded` (any case).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (the default).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1` (its `for=` parameters).
    Forwarded,
}

impl ForwardedHeader {
    /// The header's name, lower-case (as accepted by [`str::parse`]).
    pub fn name(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        }
    }
}

impl fmt::Display for ForwardedHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a [`ForwardedHeader`]: names the value and the accepted ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a forwarding header: expected `x-forwarded-for` or `forwarded`")]
pub struct ParseForwardedHeaderError(String);

impl FromStr for ForwardedHeader {
    type Err = ParseForwardedHeaderError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("x-forwarded-for") {
            Ok(ForwardedHeader::XForwardedFor)
        } else if text.eq_ignore_ascii_case("forwarded") {
            Ok(ForwardedHeader::Forwarded)
        } else {
            Err(ParseForwardedHeaderError(text.chars().take(64).collect()))
        }
    }
}

/// The reverse proxies (load balancers) whose forwarding header is believed, as networks, and
/// which header that is ([`ForwardedHeader`], `X-Forwarded-For` unless set with
/// [`TrustedProxies::with_header`]). `Default` trusts none: the TCP peer is the client.
///
/// Behind a trusted peer, the client is the right-most address of the forwarding chain that is
/// not itself a trusted proxy: every hop appends the address it received the request from, so
/// hops to the left of the first untrusted one may be forged by the client and are ignored.
/// Only the configured header is read: a client's own `Forwarded` header, which proxies that
/// append to `X-Forwarded-For` pass through, names nobody (and the reverse).
/// A peer that is not trusted gets no say at all, whatever headers it sends.
///
/// ```
/// use std::net::IpAddr;
/// use tenantkit_core::TrustedProxies;
///
/// let proxies: TrustedProxies = "10.0.0.0/8, ::1".parse().expect("networks");
/// let mut headers = http::HeaderMap::new();
/// headers.insert("x-forwarded-for", "198.51.100.9, 203.0.113.5, 10.1.2.3".parse().unwrap());
/// let peer: IpAddr = "10.0.0.2".parse().unwrap();
/// assert_eq!(proxies.client(peer, &headers), "203.0.113.5".parse::<IpAddr>().unwrap());
/// let stranger: IpAddr = "192.0.2.1".parse().unwrap();
/// assert_eq!(proxies.client(stranger, &headers), stranger);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
    header: ForwardedHeader,
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Networks<'a>(&'a [IpNet]);
        impl fmt::Debug for Networks<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list()
                    .entries(self.0.iter().map(ToString::to_string))
                    .finish()
            }
        }
        f.debug_struct("TrustedProxies")
            .field("networks", &Networks(&self.networks))
            .field("header", &self.header.name())
            .finish()
    }
}

/// The error of parsing [`TrustedProxies`]: names the entry that is not an address or network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IP address or CIDR network")]
pub struct ParseProxiesError(String);

impl FromStr for TrustedProxies {
    type Err = ParseProxiesError;

    /// Comma-separated networks (`10.0.0.0/8`) or single addresses (`::1`); the header is
    /// `X-Forwarded-For` (see [`TrustedProxies::with_header`]).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut networks = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let network = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| ParseProxiesError(entry.chars().take(64).collect()))?;
            networks.push(network);
        }
        Ok(Self {
            networks,
            header: ForwardedHeader::default(),
        })
    }
}

/// At most this many forwarding hops are looked at; a longer chain is cut on the left.
const MAX_HOPS: usize = 32;

impl TrustedProxies {
    /// Trusts these networks, reading `X-Forwarded-For` (see [`TrustedProxies::with_header`]).
    pub fn new(networks: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            networks: networks.into_iter().collect(),
            header: ForwardedHeader::default(),
        }
    }

    /// Reads `header` (and only it) from the trusted proxies.
    #[must_use]
    pub fn with_header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// The forwarding header that is read.
    pub fn header(&self) -> ForwardedHeader {
        self.header
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.networks.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that arrived from `peer` with `headers`: `peer` unless it is a
    /// trusted proxy, else the right-most untrusted hop of the configured header (the other
    /// one is ignored). A hop that is not an address ends the walk: the hop to its right, which
    /// received the request from it, is answered.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let hops = forwarded_hops(self.header, headers);
        let mut client = peer;
        for hop in hops.iter().rev().take(MAX_HOPS) {
            match hop {
                Some(ip) if self.trusts(*ip) => client = *ip,
                Some(ip) => return *ip,
                None => return client,
            }
        }
        client
    }
}

/// The forwarding chain of `header` (every line of it, in order), left (the original client)
/// to right (the last proxy). `None` marks a hop that is not an address (`unknown`, an
/// obfuscated name, garbage, a line that is not text).
fn forwarded_hops(header: ForwardedHeader, headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let lines = headers
        .get_all(header.name())
        .iter()
        .map(|v| v.to_str().ok());
    match header {
        ForwardedHeader::XForwardedFor => lines
            .flat_map(|line| match line {
                Some(value) => value
                    .split(',')
                    .map(|hop| parse_address(hop.trim()))
                    .collect(),
                None => vec![None],
            })
            .collect(),
        ForwardedHeader::Forwarded => lines
            .flat_map(|line| match line {
                Some(value) => value.split(',').map(forwarded_element).collect(),
                None => vec![None],
            })
            .collect(),
    }
}

/// The `for=` address of one `Forwarded` element (`for=192.0.2.60;proto=http`).
fn forwarded_element(element: &str) -> Option<IpAddr> {
    element
        .split(';')
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case("for")
                .then_some(value.trim())
        })
        .and_then(parse_forwarded_for)
}

/// A `for=` value of RFC 7239: `192.0.2.60`, `"[2001:db8::1]:4711"`, `"192.0.2.60:80"`.
fn parse_forwarded_for(value: &str) -> Option<IpAddr> {
    parse_address(value.trim_matches('"'))
}

/// An address, with or without brackets and a port.
fn parse_address(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, _) = rest.split_once(']')?;
        return inside.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    }
    let (host, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().expect("header"));
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn untrusted_peers_get_no_say() {
        let proxies: TrustedProxies = "10.0.0.0/8".parse().expect("parse");
        let forged = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(proxies.client(ip("192.0.2.1"), &forged), ip("192.0.2.1"));
        assert_eq!(
            TrustedProxies::default().client(ip("10.0.0.1"), &forged),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let proxies: TrustedProxies = "10.0.0.0/8, 172.16.0.1".parse().expect("parse");
        let chain = headers(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7"),
            ("x-forwarded-for", "172.16.0.1, 10.9.9.9"),
        ]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &chain), ip("198.51.100.7"));
        let all_trusted = headers(&[("x-forwarded-for", "10.1.1.1, 10.2.2.2")]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &all_trusted), ip("10.1.1.1"));
        let none = HeaderMap::new();
        assert_eq!(proxies.client(ip("10.0.0.2"), &none), ip("10.0.0.2"));
    }

    #[test]
    fn a_forged_forwarded_header_is_ignored_in_x_forwarded_for_mode() {
        // nginx/ALB/Caddy append to X-Forwarded-For and pass the client's `Forwarded` through.
        let proxies: TrustedProxies = "127.0.0.0/8".parse().expect("parse");
        assert_eq!(
            proxies.header(),
            ForwardedHeader::XForwardedFor,
            "the default"
        );
        let forged = headers(&[
            ("forwarded", "for=192.0.2.77"),
            ("x-forwarded-for", "203.0.113.5"),
        ]);
        assert_eq!(proxies.client(ip("127.0.0.1"), &forged), ip("203.0.113.5"));
        let only_forwarded = headers(&[("forwarded", "for=192.0.2.77")]);
        assert_eq!(
            proxies.client(ip("127.0.0.1"), &only_forwarded),
            ip("127.0.0.1"),
            "without its header the proxy itself is the client"
        );
    }

    #[test]
    fn a_forged_x_forwarded_for_is_ignored_in_forwarded_mode() {
        let proxies = "127.0.0.1"
            .parse::<TrustedProxies>()
            .expect("parse")
            .with_header(ForwardedHeader::Forwarded);
        let both = headers(&[
            ("x-forwarded-for", "9.9.9.9"),
            (
                "forwarded",
                "for=192.0.2.60;proto=http, for=\"[2001:db8:cafe::17]:4711\"",
            ),
        ]);
        assert_eq!(
            proxies.client(ip("127.0.0.1"), &both),
            ip("2001:db8:cafe::17")
        );
        let port = headers(&[("forwarded", "for=\"192.0.2.43:47011\"")]);
        assert_eq!(proxies.client(ip("127.0.0.1"), &port), ip("192.0.2.43"));
        let only_xff = headers(&[("x-forwarded-for", "9.9.9.9")]);
        assert_eq!(proxies.client(ip("127.0.0.1"), &only_xff), ip("127.0.0.1"));
    }

    #[test]
    fn the_forwarded_chain_is_read_from_the_right() {
        let proxies = "10.0.0.0/8"
            .parse::<TrustedProxies>()
            .expect("parse")
            .with_header(ForwardedHeader::Forwarded);
        let chain = headers(&[
            ("forwarded", "for=6.6.6.6, for=198.51.100.7;proto=https"),
            ("forwarded", "For=10.3.3.3;by=10.0.0.2"),
        ]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &chain), ip("198.51.100.7"));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_either_header_says() {
        let headers = headers(&[
            ("forwarded", "for=192.0.2.77"),
            ("x-forwarded-for", "203.0.113.5"),
        ]);
        for header in [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded] {
            let proxies = "10.0.0.0/8"
                .parse::<TrustedProxies>()
                .expect("parse")
                .with_header(header);
            assert_eq!(proxies.client(ip("192.0.2.1"), &headers), ip("192.0.2.1"));
        }
    }

    #[test]
    fn the_header_setting_parses_and_names_bad_values() {
        assert_eq!(
            "x-forwarded-for".parse::<ForwardedHeader>(),
            Ok(ForwardedHeader::XForwardedFor)
        );
        assert_eq!(
            " Forwarded ".parse::<ForwardedHeader>(),
            Ok(ForwardedHeader::Forwarded)
        );
        let err = "x-real-ip".parse::<ForwardedHeader>().expect_err("bad");
        assert!(err.to_string().contains("x-real-ip"), "{err}");
        assert!(err.to_string().contains("x-forwarded-for"), "{err}");
        for header in [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded] {
            assert_eq!(header.to_string().parse::<ForwardedHeader>(), Ok(header));
        }
    }

    #[test]
    fn garbage_hops_stop_at_the_proxy_that_received_them() {
        let proxies: TrustedProxies = "10.0.0.0/8".parse().expect("parse");
        let garbage = headers(&[("x-forwarded-for", "203.0.113.1, not-an-ip, 10.0.0.5")]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &garbage), ip("10.0.0.5"));
        let unknown = headers(&[("forwarded", "for=unknown")]);
        let forwarded = proxies.with_header(ForwardedHeader::Forwarded);
        assert_eq!(forwarded.client(ip("10.0.0.2"), &unknown), ip("10.0.0.2"));
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_networks() {
        let proxies: TrustedProxies = "127.0.0.0/8".parse().expect("parse");
        let mapped = IpAddr::V6(std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        let forwarded = headers(&[("x-forwarded-for", "198.51.100.1")]);
        assert_eq!(proxies.client(mapped, &forwarded), ip("198.51.100.1"));
    }

    #[test]
    fn bad_entries_are_named() {
        let err = "10.0.0.0/8, nonsense"
            .parse::<TrustedProxies>()
            .expect_err("bad");
        assert!(err.to_string().contains("nonsense"));
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("".parse::<TrustedProxies>().expect("empty").is_empty());
    }
}
