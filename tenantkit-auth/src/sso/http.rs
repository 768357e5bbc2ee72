//! The HTTP client of single sign-on. An issuer is typed in by a tenant's admin, so every
//! request to it is a server-side request forgery surface: this client refuses anything but
//! `https` to public addresses, never follows a redirect, never uses a proxy (a proxy resolves
//! names itself, out of reach of the checks), bounds each body and each request's time.
//!
//! Names are resolved by the client's own resolver, which refuses an answer holding any
//! non-public address (fail closed: a mixed answer cannot smuggle one in, and the connection
//! goes to exactly the addresses checked, so a rebinding between check and connect is not
//! possible). Addresses written in the URL never reach a resolver: they are checked before the
//! request. Hosts the operator allow-lists ([`OutboundPolicy::allow_host`], for an on-premises
//! provider or a test provider on loopback) may use `http` and any address.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};
use url::Host;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The most bytes of a response body read by default: discovery documents and key sets are a
/// few KiB, token responses with group claims tens of KiB.
pub const DEFAULT_MAX_BODY: usize = 256 * 1024;

/// Why an outbound request failed. Its message never carries a response body (a body may hold
/// tokens).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboundError {
    /// The URL or an address it resolves to is not allowed.
    #[error("outbound request refused: {0}")]
    Refused(&'static str),
    /// The response body was larger than the limit.
    #[error("response body larger than {0} bytes")]
    TooLarge(usize),
    /// Connect, TLS, timeout or protocol failure (a refusal by the resolver arrives here too).
    #[error("outbound request failed: {0}")]
    Transport(String),
}

/// The operator's exceptions to the outbound rules. Never a tenant's setting.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    allowed_hosts: HashSet<String>,
    timeout: Option<Duration>,
}

impl OutboundPolicy {
    /// `https` to public addresses only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets `host` (a name or an address as written in URLs, e.g. `127.0.0.1` or
    /// `idp.internal`) be reached over plain `http` and at any address.
    #[must_use]
    pub fn allow_host(mut self, host: &str) -> Self {
        self.allowed_hosts
            .insert(host.trim_matches(['[', ']']).to_ascii_lowercase());
        self
    }

    /// Each request's whole time, body included (default 10 s).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    fn allows(&self, host: &str) -> bool {
        self.allowed_hosts
            .contains(host.trim_matches(['[', ']']).to_ascii_lowercase().as_str())
    }

    /// Whether `url` may be requested at all: its scheme, and its host when written as an
    /// address (names are checked when resolved).
    pub(crate) fn check_url(&self, url: &url::Url) -> Result<(), OutboundError> {
        let host = url.host_str().ok_or(OutboundError::Refused("no host"))?;
        let allowed = self.allows(host);
        match url.scheme() {
            "https" => {}
            "http" if allowed => {}
            _ => return Err(OutboundError::Refused("only https")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(OutboundError::Refused("credentials in the URL"));
        }
        let literal = match url.host() {
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(Host::Domain(_)) => None,
            None => return Err(OutboundError::Refused("no host")),
        };
        if let Some(ip) = literal
            && !allowed
            && !is_public(ip)
        {
            return Err(OutboundError::Refused("not a public address"));
        }
        Ok(())
    }
}

/// The HTTP client of single sign-on: `https` to public addresses only (the
/// [`OutboundPolicy`]'s hosts excepted), no redirects, no proxies, names resolved by its own
/// resolver (an answer holding any non-public address is refused, and the connection goes to
/// exactly the addresses checked: no DNS rebinding), addresses written in URLs checked before
/// any request, bodies bounded to [`DEFAULT_MAX_BODY`], each request bounded in time. Cheap to
/// clone.
#[derive(Clone)]
pub struct GuardedHttpClient {
    inner: reqwest::Client,
    policy: Arc<OutboundPolicy>,
    max_body: usize,
}

impl fmt::Debug for GuardedHttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedHttpClient")
            .field("policy", &self.policy)
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

impl GuardedHttpClient {
    /// A client under `policy` (TLS: rustls with the webpki roots).
    ///
    /// # Errors
    /// When the TLS stack cannot be set up.
    pub fn new(policy: OutboundPolicy) -> Result<Self, OutboundError> {
        let policy = Arc::new(policy);
        let inner = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: Arc::clone(&policy),
            }))
            .connect_timeout(Duration::from_secs(5))
            .timeout(policy.timeout.unwrap_or(Duration::from_secs(10)))
            .user_agent(concat!("tenantkit-auth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OutboundError::Transport(e.to_string()))?;
        Ok(Self {
            inner,
            policy,
            max_body: DEFAULT_MAX_BODY,
        })
    }

    /// The policy the client enforces.
    pub fn policy(&self) -> &OutboundPolicy {
        &self.policy
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, OutboundError> {
        let request = reqwest::Request::try_from(request)
            .map_err(|e| OutboundError::Transport(e.without_url().to_string()))?;
        self.policy.check_url(request.url())?;
        let mut response = self
            .inner
            .execute(request)
            .await
            .map_err(|e| transport(&e))?;
        if response
            .content_length()
            .is_some_and(|n| n > self.max_body as u64)
        {
            return Err(OutboundError::TooLarge(self.max_body));
        }
        let mut builder = http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| transport(&e))? {
            if body.len() + chunk.len() > self.max_body {
                return Err(OutboundError::TooLarge(self.max_body));
            }
            body.extend_from_slice(&chunk);
        }
        builder
            .body(body)
            .map_err(|e| OutboundError::Transport(e.to_string()))
    }
}

/// A transport error, naming a refusal of the resolver when that was the cause.
fn transport(err: &reqwest::Error) -> OutboundError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if let Some(OutboundError::Refused(why)) = cause.downcast_ref::<OutboundError>() {
            return OutboundError::Refused(why);
        }
        source = cause.source();
    }
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    OutboundError::Transport(kind.to_owned())
}

impl<'c> AsyncHttpClient<'c> for GuardedHttpClient {
    type Error = OutboundError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, OutboundError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

#[derive(Debug)]
struct GuardedResolver {
    policy: Arc<OutboundPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let allowed = self.policy.allows(&host);
        Box::pin(resolve_checked(host, allowed))
    }
}

async fn resolve_checked(host: String, allowed: bool) -> Result<reqwest::dns::Addrs, BoxError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
    if addrs.is_empty() {
        return Err(Box::new(OutboundError::Refused("the name has no address")));
    }
    if !allowed && addrs.iter().any(|a| !is_public(a.ip())) {
        return Err(Box::new(OutboundError::Refused("not a public address")));
    }
    Ok(Box::new(addrs.into_iter()))
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len))
}

const fn v6(segments: [u16; 8], len: u8) -> IpNet {
    let [a, b, c, d, e, f, g, h] = segments;
    IpNet::V6(Ipv6Net::new_assert(
        Ipv6Addr::new(a, b, c, d, e, f, g, h),
        len,
    ))
}

/// Not reachable from the public internet, or special-purpose (the IANA registries).
const BLOCKED: &[IpNet] = &[
    v4(0, 0, 0, 0, 8),
    v4(10, 0, 0, 0, 8),
    v4(100, 64, 0, 0, 10),
    v4(127, 0, 0, 0, 8),
    v4(169, 254, 0, 0, 16),
    v4(172, 16, 0, 0, 12),
    v4(192, 0, 0, 0, 24),
    v4(192, 0, 2, 0, 24),
    v4(192, 88, 99, 0, 24),
    v4(192, 168, 0, 0, 16),
    v4(198, 18, 0, 0, 15),
    v4(198, 51, 100, 0, 24),
    v4(203, 0, 113, 0, 24),
    v4(224, 0, 0, 0, 4),
    v4(240, 0, 0, 0, 4),
    // ::/96: unspecified, loopback, IPv4-compatible.
    v6([0; 8], 96),
    // NAT64 and 6to4 embed an IPv4 address (possibly an internal one); Teredo too.
    v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96),
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32),
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
];

/// Whether `ip` is a public unicast address (an IPv4-mapped IPv6 address is judged as the IPv4
/// address it maps).
pub(crate) fn is_public(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    !BLOCKED.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_public_unicast_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "2001:db8::1",
            "ff02::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn urls_are_checked_before_any_request() {
        let policy = OutboundPolicy::new().allow_host("10.1.2.3");
        let check = |u: &str| policy.check_url(&url::Url::parse(u).unwrap());
        assert!(check("https://idp.example.com/.well-known/x").is_ok());
        assert!(check("http://10.1.2.3:9000/").is_ok(), "allow-listed");
        assert!(
            check("https://167838211/").is_ok(),
            "the same address, spelled as a number"
        );
        for refused in [
            "http://idp.example.com/",
            "ftp://idp.example.com/",
            "https://127.0.0.2/",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/",
            "https://[::ffff:7f00:1]/",
            "https://2130706433/",
            "https://0x7f.1/",
            "https://user:pw@idp.example.com/",
            "file:///etc/passwd",
        ] {
            assert!(
                matches!(check(refused), Err(OutboundError::Refused(_))),
                "{refused}: {:?}",
                url::Url::parse(refused).map(|u| u.host().map(|h| h.to_owned()))
            );
        }
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_private_address_is_refused_at_connect() {
        let client = GuardedHttpClient::new(OutboundPolicy::new()).unwrap();
        let request = http::Request::get("https://localhost:9/x")
            .body(Vec::new())
            .unwrap();
        let refused = client.send(request).await;
        assert!(
            matches!(refused, Err(OutboundError::Refused(_))),
            "{refused:?}"
        );
    }
}
