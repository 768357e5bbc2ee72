//! Where single sign-on answers and sends browsers ([`SsoConfig`]), and the checks of what
//! an admin types in (issuer, domains).

use super::*;

/// Where single sign-on answers and sends browsers.
#[derive(Debug, Clone)]
pub struct SsoConfig {
    pub(super) public_url: url::Url,
    pub(super) app_url: url::Url,
    pub(super) redirect_origins: Vec<String>,
    pub(super) jwks_refresh_interval: Duration,
    pub(super) metadata_ttl: Duration,
    pub(super) outbound: OutboundPolicy,
}

impl SsoConfig {
    /// Single sign-on served at `public_url` (the server's public base URL, as browsers and
    /// providers reach it: the callback is `<public_url>/v1/sso/callback`), sending browsers
    /// back to `<public_url>/` unless [`SsoConfig::with_app_url`] says otherwise.
    ///
    /// # Errors
    /// `422` when `public_url` is not an absolute `http(s)` URL.
    pub fn new(public_url: &str) -> Result<Self> {
        let public_url = absolute("public_url", public_url)?;
        let app_url = public_url
            .join("/")
            .map_err(|_| invalid("public_url", "is not a base URL"))?;
        Ok(Self {
            public_url,
            app_url,
            redirect_origins: Vec::new(),
            jwks_refresh_interval: Duration::from_secs(60),
            metadata_ttl: Duration::from_secs(3600),
            outbound: OutboundPolicy::new(),
        })
    }

    /// Where a finished login goes (with `?sso_code=`) unless the login asked for another
    /// allowed place.
    ///
    /// # Errors
    /// `422` when `app_url` is not an absolute `http(s)` URL.
    pub fn with_app_url(mut self, app_url: &str) -> Result<Self> {
        self.app_url = absolute("app_url", app_url)?;
        Ok(self)
    }

    /// Lets a login's `redirect_to` go to `origin` (`https://app.example.com`) besides the
    /// public URL's and the app URL's origins. Nothing else is ever redirected to.
    #[must_use]
    pub fn allow_redirect_origin(mut self, origin: &str) -> Self {
        self.redirect_origins
            .push(origin.trim_end_matches('/').to_ascii_lowercase());
        self
    }

    /// How often, at most, a connection's key set is fetched again for an ID token signed
    /// with a key it does not hold (default 60 s): a provider's key rotation is picked up
    /// without a restart, and forged `kid`s cannot make the server hammer the provider.
    #[must_use]
    pub fn with_jwks_refresh_interval(mut self, interval: Duration) -> Self {
        self.jwks_refresh_interval = interval;
        self
    }

    /// The operator's exceptions to the outbound rules (an on-premises provider, a test
    /// provider on loopback).
    #[must_use]
    pub fn with_outbound(mut self, outbound: OutboundPolicy) -> Self {
        self.outbound = outbound;
        self
    }

    pub(super) fn callback_url(&self) -> String {
        format!(
            "{}/v1/sso/callback",
            self.public_url.as_str().trim_end_matches('/')
        )
    }

    pub(super) fn login_url(&self, slug: &Slug) -> String {
        format!(
            "{}/v1/sso/{}/login",
            self.public_url.as_str().trim_end_matches('/'),
            slug.as_str()
        )
    }

    /// Whether a browser may be sent to `target`: the same origin as the public URL, the app
    /// URL or an allowed origin.
    pub(super) fn allows_redirect(&self, target: &url::Url) -> bool {
        let origin = target.origin().ascii_serialization().to_ascii_lowercase();
        origin
            == self
                .public_url
                .origin()
                .ascii_serialization()
                .to_ascii_lowercase()
            || origin
                == self
                    .app_url
                    .origin()
                    .ascii_serialization()
                    .to_ascii_lowercase()
            || self.redirect_origins.contains(&origin)
    }
}

pub(super) fn absolute(field: &str, value: &str) -> Result<url::Url> {
    let parsed = url::Url::parse(value).map_err(|_| invalid(field, "is not an absolute URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(invalid(field, "must be an http(s) URL"));
    }
    Ok(parsed)
}

/// The issuer as the provider must publish it: an `https` URL (or an allow-listed host's
/// `http`), no query, fragment or credentials, not a multi-tenant template.
pub(super) fn check_issuer(issuer: &str, policy: &OutboundPolicy) -> Result<String> {
    let issuer = issuer.trim();
    let parsed =
        url::Url::parse(issuer).map_err(|_| invalid("issuer", "is not an absolute URL"))?;
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid("issuer", "must not have a query or fragment"));
    }
    policy
        .check_url(&parsed)
        .map_err(|_| invalid("issuer", "must be https on a public address"))?;
    let lowered = issuer.to_ascii_lowercase();
    let template = lowered.contains("{tenantid}")
        || lowered.contains("{tenant}")
        || (parsed
            .host_str()
            .is_some_and(|h| h.eq_ignore_ascii_case("login.microsoftonline.com"))
            && parsed
                .path_segments()
                .and_then(|mut s| s.next())
                .is_some_and(|first| {
                    matches!(
                        first.to_ascii_lowercase().as_str(),
                        "common" | "organizations" | "consumers"
                    )
                }));
    if template {
        return Err(invalid(
            "issuer",
            "is a multi-tenant issuer; use your organisation's own (e.g. https://login.microsoftonline.com/<tenant id>/v2.0)",
        ));
    }
    if issuer.len() > 512 {
        return Err(invalid("issuer", "is too long"));
    }
    Ok(issuer.to_owned())
}

pub(super) fn check_domains(domains: &[String]) -> Result<Vec<String>> {
    if domains.len() > MAX_DOMAINS {
        return Err(invalid("domains", "at most 20"));
    }
    let mut checked: Vec<String> = Vec::with_capacity(domains.len());
    for domain in domains {
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let valid = domain.len() <= 253
            && domain.contains('.')
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !valid {
            return Err(invalid(
                "domains",
                "each must be a domain name (example.com)",
            ));
        }
        if !checked.contains(&domain) {
            checked.push(domain);
        }
    }
    Ok(checked)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn issuers_are_https_and_tenant_specific() {
        let policy = OutboundPolicy::new();
        assert!(check_issuer("https://login.example.com/realms/acme", &policy).is_ok());
        for bad in [
            "http://login.example.com",
            "https://login.microsoftonline.com/common/v2.0",
            "https://login.microsoftonline.com/organizations/v2.0",
            "https://login.microsoftonline.com/Consumers/v2.0",
            "https://login.microsoftonline.com/{tenantid}/v2.0",
            "https://login.example.com/?x=1",
            "https://127.0.0.1/",
            "not a url",
        ] {
            assert!(check_issuer(bad, &policy).is_err(), "{bad}");
        }
        assert!(
            check_issuer(
                "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0",
                &policy
            )
            .is_ok()
        );
    }

    #[test]
    fn domains_are_names() {
        assert_eq!(
            check_domains(&["Example.COM.".into(), "example.com".into()]).unwrap(),
            ["example.com"]
        );
        for bad in ["localhost", "ex ample.com", "-x.com", "", "a..b"] {
            assert!(check_domains(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn redirects_stay_on_allowed_origins() {
        let config = SsoConfig::new("https://api.example.com")
            .unwrap()
            .with_app_url("https://app.example.com/signed-in")
            .unwrap()
            .allow_redirect_origin("https://admin.example.com/");
        let allows = |u: &str| config.allows_redirect(&url::Url::parse(u).unwrap());
        assert!(allows("https://app.example.com/x?y=1"));
        assert!(allows("https://api.example.com/"));
        assert!(allows("https://admin.example.com/deep/link"));
        for bad in [
            "https://evil.example.com/",
            "http://app.example.com/",
            "https://app.example.com.evil.com/",
            "https://app.example.com:444/",
            "javascript:alert(1)",
        ] {
            assert!(!allows(bad), "{bad}");
        }
    }
}
