//! The request and answer types of single sign-on, and the query and cookie readers.

use super::*;

/// A tenant's connection to its identity provider, as answered (never its secret).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct SsoConnection {
    /// The connection's id.
    pub id: SsoConnectionId,
    /// The provider's issuer, exactly as it publishes it.
    pub issuer: String,
    /// The client id the tenant registered at its provider.
    pub client_id: String,
    /// The role a just-in-time member gets.
    pub default_role: Role,
    /// The domains the tenant claims, and whether each is verified.
    pub domains: Vec<SsoDomain>,
    /// When the connection was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// An email domain a tenant claims for just-in-time membership.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct SsoDomain {
    /// The domain (lowercase).
    pub domain: String,
    /// Whether the domain is verified for this tenant (only then do its addresses join).
    pub verified: bool,
    /// The DNS TXT record that proves the domain: publish it, then verify.
    pub dns_record: DnsRecord,
}

/// A DNS TXT record to publish.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct DnsRecord {
    /// The record's name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// A new connection (`POST /v1/sso/connections`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewSsoConnection {
    /// The provider's issuer (`https://login.example.com/tenant-id/v2.0`), exactly as it
    /// publishes it.
    pub issuer: String,
    /// The client id registered at the provider.
    pub client_id: String,
    /// The client's secret (sealed at rest, never answered).
    pub client_secret: String,
    /// The email domains the tenant claims for just-in-time membership.
    #[serde(default)]
    pub domains: Vec<String>,
    /// The role of a just-in-time member (default `member`; never `owner`).
    #[serde(default)]
    pub default_role: Option<Role>,
}

impl fmt::Debug for NewSsoConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSsoConnection")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("domains", &self.domains)
            .field("default_role", &self.default_role)
            .finish_non_exhaustive()
    }
}

/// A login sent to the provider: where to send the browser, and the cookie to set on it.
#[derive(Clone)]
#[non_exhaustive]
pub struct LoginStart {
    /// The provider's authorization URL (`302 Location`).
    pub location: String,
    /// The `Set-Cookie` value binding the login to this browser.
    pub set_cookie: String,
}

impl fmt::Debug for LoginStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginStart(..)")
    }
}

/// The query of the provider's redirect back (`GET /v1/sso/callback`). Other parameters a
/// provider adds are ignored.
#[derive(Default, Deserialize)]
#[serde(default)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
pub struct CallbackParams {
    /// The authorization code.
    pub code: Option<String>,
    /// The state the login was sent with.
    pub state: Option<String>,
    /// The provider's error, when it refused.
    pub error: Option<String>,
    /// The issuer (RFC 9207), when the provider sends it: must be the connection's.
    pub iss: Option<String>,
}

impl fmt::Debug for CallbackParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackParams")
            .field("error", &self.error)
            .field("iss", &self.iss)
            .finish_non_exhaustive()
    }
}

impl CallbackParams {
    /// The parameters of a raw query string (`code=…&state=…`); repeated or unknown ones
    /// are ignored (the first of each counts).
    pub fn from_query(query: Option<&str>) -> Self {
        let [code, state, error, iss] = first_values(query, ["code", "state", "error", "iss"]);
        Self {
            code,
            state,
            error,
            iss,
        }
    }
}

/// The query of `GET /v1/sso/{tenant_slug}/login`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
pub struct LoginParams {
    /// Where the app wants the browser back (an allowed origin only).
    pub redirect_to: Option<String>,
    /// Passed to the provider (the address the user typed).
    pub login_hint: Option<String>,
}

impl LoginParams {
    /// The parameters of a raw query string; unknown ones are ignored.
    pub fn from_query(query: Option<&str>) -> Self {
        let [redirect_to, login_hint] = first_values(query, ["redirect_to", "login_hint"]);
        Self {
            redirect_to,
            login_hint,
        }
    }
}

/// The query of a login the provider starts (`GET /v1/sso/{tenant_slug}/initiate`, OpenID
/// Connect Core §4).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
pub struct InitiatedParams {
    /// The provider's issuer (required): the tenant's connection to it is used.
    pub iss: Option<String>,
    /// The account the provider suggests.
    pub login_hint: Option<String>,
    /// Where the browser should end (kept only when it is an allowed address).
    pub target_link_uri: Option<String>,
}

impl InitiatedParams {
    /// The parameters of a raw query string; unknown ones are ignored.
    pub fn from_query(query: Option<&str>) -> Self {
        let [iss, login_hint, target_link_uri] =
            first_values(query, ["iss", "login_hint", "target_link_uri"]);
        Self {
            iss,
            login_hint,
            target_link_uri,
        }
    }
}

/// The first value of each of `names` in a raw query string (form-decoded); others ignored.
pub(super) fn first_values<const N: usize>(
    query: Option<&str>,
    names: [&str; N],
) -> [Option<String>; N] {
    let mut values = [const { None }; N];
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if let Some(i) = names.iter().position(|name| *name == key)
            && values[i].is_none()
        {
            values[i] = Some(value.into_owned());
        }
    }
    values
}

/// The value of the [`SSO_COOKIE`] in a request's `Cookie` headers, if any.
pub fn browser_cookie(headers: &::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SSO_COOKIE)
        .map(|(_, value)| value)
}

/// `POST /v1/auth/sso/exchange`: the code of a finished login.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SsoExchange {
    /// The `sso_code` the callback put in the app's URL.
    pub code: String,
}

impl fmt::Debug for SsoExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SsoExchange(..)")
    }
}

/// `POST /v1/sso/discover`: an email address.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SsoDiscover {
    /// The address someone wants to sign in with.
    pub email: String,
}

/// Where the caller's browser goes to link its account to the tenant's identity provider.
#[derive(Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct SsoLinkUrl {
    /// Open it in the browser (single use, 2 minutes).
    pub link_url: String,
}

impl fmt::Debug for SsoLinkUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SsoLinkUrl(..)")
    }
}

/// Where an address signs in.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct SsoLoginUrl {
    /// The tenant's login URL (`GET` it in the browser).
    pub login_url: String,
}

/// Reads DNS TXT records (domain verification). The server uses the system resolver; tests a
/// stub.
pub trait TxtResolver: fmt::Debug + Send + Sync + 'static {
    /// The TXT records at `name`, each as text.
    fn txt<'a>(
        &'a self,
        name: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<String>>> + Send + 'a>>;
}
