//! Who is calling: the client's address behind trusted reverse proxies.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use http::HeaderMap;
use ipnet::IpNet;

/// The reverse proxies (load balancers) whose `Forwarded` / `X-Forwarded-For` headers are
/// believed, as networks. `Default` trusts none: the TCP peer is the client.
///
/// Behind a trusted peer, the client is the right-most address of the forwarding chain that is
/// not itself a trusted proxy: every hop appends the address it received the request from, so
/// hops to the left of the first untrusted one may be forged by the client and are ignored.
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
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.networks.iter().map(ToString::to_string))
            .finish()
    }
}

/// The error of parsing [`TrustedProxies`]: names the entry that is not an address or network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IP address or CIDR network")]
pub struct ParseProxiesError(String);

impl FromStr for TrustedProxies {
    type Err = ParseProxiesError;

    /// Comma-separated networks (`10.0.0.0/8`) or single addresses (`::1`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut networks = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let network = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| ParseProxiesError(entry.chars().take(64).collect()))?;
            networks.push(network);
        }
        Ok(Self { networks })
    }
}

/// At most this many forwarding hops are looked at; a longer chain is cut on the left.
const MAX_HOPS: usize = 32;

impl TrustedProxies {
    /// Trusts these networks.
    pub fn new(networks: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            networks: networks.into_iter().collect(),
        }
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
    /// trusted proxy, else the right-most untrusted hop of `Forwarded` (preferred) or
    /// `X-Forwarded-For`. A hop that is not an address ends the walk: the hop to its right,
    /// which received the request from it, is answered.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let hops = forwarded_hops(headers);
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

/// The forwarding chain, left (the original client) to right (the last proxy), from the
/// `Forwarded` header if there is one, else from `X-Forwarded-For`. `None` marks a hop that is
/// not an address (`unknown`, an obfuscated name, garbage).
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<&str> = headers
        .get_all(http::header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|value| value.split(','))
            .map(|element| {
                element
                    .split(';')
                    .find_map(|pair| {
                        let (key, value) = pair.trim().split_once('=')?;
                        key.trim()
                            .eq_ignore_ascii_case("for")
                            .then_some(value.trim())
                    })
                    .and_then(parse_forwarded_for)
            })
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|hop| parse_address(hop.trim()))
        .collect()
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
    fn forwarded_is_preferred_and_parsed_with_ports_and_brackets() {
        let proxies: TrustedProxies = "127.0.0.1".parse().expect("parse");
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
    }

    #[test]
    fn garbage_hops_stop_at_the_proxy_that_received_them() {
        let proxies: TrustedProxies = "10.0.0.0/8".parse().expect("parse");
        let garbage = headers(&[("x-forwarded-for", "203.0.113.1, not-an-ip, 10.0.0.5")]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &garbage), ip("10.0.0.5"));
        let unknown = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &unknown), ip("10.0.0.2"));
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
