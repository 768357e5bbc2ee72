//! Per-tenant single sign-on with OpenID Connect (feature `sso`): each tenant connects its own
//! identity provider, and its members sign in there (authorization code flow with PKCE S256,
//! `state` and `nonce`), in one deployment.
//!
//! - **Connections** ([`Sso::create_connection`], admin+): issuer, client id, client secret
//!   (sealed at rest with the server's secret key, never answered), the email domains the
//!   tenant claims and the role of a just-in-time member. The issuer is discovered when the
//!   connection is made, through the [guarded client](GuardedHttpClient): `https` to public
//!   addresses only, no redirects, bounded bodies and time. Multi-tenant issuer templates
//!   (Entra's `/common`, `/organizations`, `/consumers`) are refused: a tenant-specific issuer
//!   is the only one whose `iss` means "this organisation".
//! - **Login** ([`Sso::start_login`]): `302` to the provider. The `state` is stored hashed,
//!   single-use, for 10 minutes, bound to the tenant and to a browser cookie
//!   ([`SSO_COOKIE`]: `HttpOnly`, `SameSite=Lax`, `Secure` on an `https` public URL).
//! - **Callback** ([`Sso::callback`]): checks the state and its cookie (a callback nobody
//!   started is refused), exchanges the code with the PKCE verifier, verifies the ID token
//!   (issuer, audience and no other, expiry, nonce, `azp` when present, an asymmetric algorithm
//!   the provider announced; an unknown `kid` fetches the key set again at most once per
//!   interval, so a provider's key rotation needs no restart) and never puts a token in a URL:
//!   it redirects to the app with a **single-use 60-second code** that
//!   [`Sso::exchange`] trades for a normal token pair (`amr`: `sso`, and `sso_mfa` when the
//!   provider checked more than one factor; the provider's own values are never stored, and
//!   a session derived in another tenant drops both).
//! - **Accounts** are linked by (issuer, subject), never by email alone. A provider's first
//!   sign-in of an unknown address creates the account and its membership (the connection's
//!   role) only when the provider says `email_verified` and the address is in a domain the
//!   tenant has verified; an existing password account with that address is not taken over
//!   (`409`: link it by signing in with its password first). Domains are verified by the
//!   operator ([`Sso::verify_domain`]) or by a DNS TXT record ([`Sso::verify_domain_by_dns`]
//!   through a [`TxtResolver`]).
//! - **Discovery** ([`Sso::discover`]): the login URL of the tenant that verified an email's
//!   domain.
//!
//! Every event is audited: `sso.connection_created`, `sso.connection_deleted`,
//! `sso.domain_verified`, `sso.linked`, `sso.jit_joined`, `auth.login` (via SSO) and
//! `sso.failed`.

mod http;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdTokenVerifier, CoreJsonWebKeySet,
    CoreJwsSigningAlgorithm as Alg, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, LoginHint, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, SignatureVerificationError,
};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;
use tenantkit_core::{
    ClientInfo, Clock, Email, FieldError, Keyring, NewUser, Permission, Principal, Role, Slug,
    TenantId, TenantScope, User, UserId, with_conn,
};
use time::OffsetDateTime;

pub use http::{DEFAULT_MAX_BODY, GuardedHttpClient, OutboundError, OutboundPolicy};

use crate::flows::{AuthFlows, LoggedIn, SignIn, SignInVia};
use crate::{Attempt, AuthMethods, Error, OneTimeToken, Result};

tenantkit_core::define_id!(
    /// Identifies a tenant's single sign-on connection.
    SsoConnectionId,
    "sso connection id"
);

/// The cookie that binds a login to the browser that started it.
pub const SSO_COOKIE: &str = "tenantkit_sso";
/// The `amr` value of a session signed in through a tenant's identity provider (beside the
/// provider's own values). Not an RFC 8176 value: tenantkit's ([`tenantkit_core::amr::SSO`]).
pub const AMR_SSO: &str = tenantkit_core::amr::SSO;
/// How long a login sent to a provider waits for its callback.
pub const LOGIN_TTL: Duration = Duration::from_secs(10 * 60);
/// How long the code a callback hands the app is good for.
pub const CODE_TTL: Duration = Duration::from_secs(60);
/// How long a link ticket ([`Sso::link_url`]) waits to be opened.
pub const LINK_TTL: Duration = Duration::from_secs(2 * 60);
/// Domains one connection may claim.
const MAX_DOMAINS: usize = 20;
/// Providers whose metadata is kept in memory (the least recently fetched goes first).
const CACHE_CAPACITY: usize = 1024;
/// The prefix of the single-use code of a callback.
const CODE_PREFIX: &str = "sso_";
/// The ID token algorithms accepted: asymmetric only (an HMAC keyed with the client secret
/// could be minted by anyone who knows it, a tenant's admin included), and `none` never.
const ASYMMETRIC: [Alg; 9] = [
    Alg::RsaSsaPkcs1V15Sha256,
    Alg::RsaSsaPkcs1V15Sha384,
    Alg::RsaSsaPkcs1V15Sha512,
    Alg::RsaSsaPssSha256,
    Alg::RsaSsaPssSha384,
    Alg::RsaSsaPssSha512,
    Alg::EcdsaP256Sha256,
    Alg::EcdsaP384Sha384,
    Alg::EdDsa,
];

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    EndpointMaybeSet,
>;

/// Where single sign-on answers and sends browsers.
#[derive(Debug, Clone)]
pub struct SsoConfig {
    public_url: url::Url,
    app_url: url::Url,
    redirect_origins: Vec<String>,
    jwks_refresh_interval: Duration,
    metadata_ttl: Duration,
    outbound: OutboundPolicy,
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

    fn callback_url(&self) -> String {
        format!(
            "{}/v1/sso/callback",
            self.public_url.as_str().trim_end_matches('/')
        )
    }

    fn login_url(&self, slug: &Slug) -> String {
        format!(
            "{}/v1/sso/{}/login",
            self.public_url.as_str().trim_end_matches('/'),
            slug.as_str()
        )
    }

    /// Whether a browser may be sent to `target`: the same origin as the public URL, the app
    /// URL or an allowed origin.
    fn allows_redirect(&self, target: &url::Url) -> bool {
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

fn absolute(field: &str, value: &str) -> Result<url::Url> {
    let parsed = url::Url::parse(value).map_err(|_| invalid(field, "is not an absolute URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(invalid(field, "must be an http(s) URL"));
    }
    Ok(parsed)
}

fn invalid(field: &str, message: &str) -> Error {
    Error::Core(tenantkit_core::Error::Validation(vec![FieldError::new(
        field, message,
    )]))
}

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
fn first_values<const N: usize>(query: Option<&str>, names: [&str; N]) -> [Option<String>; N] {
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

/// A provider's metadata and keys, as cached.
#[derive(Clone)]
struct Provider {
    metadata: CoreProviderMetadata,
    jwks: CoreJsonWebKeySet,
    fetched_at: OffsetDateTime,
    jwks_fetched_at: OffsetDateTime,
}

/// A stored connection, with its sealed secret.
#[derive(sqlx::FromRow)]
struct ConnectionRow {
    id: SsoConnectionId,
    tenant_id: TenantId,
    issuer: String,
    client_id: String,
    client_secret: String,
    default_role: String,
    created_at: OffsetDateTime,
}

/// Single sign-on over [`AuthFlows`]; see the [module documentation](self). Cheap to clone.
#[derive(Clone)]
pub struct Sso {
    flows: AuthFlows,
    keyring: Arc<Keyring>,
    config: Arc<SsoConfig>,
    http: GuardedHttpClient,
    providers: Arc<Mutex<HashMap<SsoConnectionId, Provider>>>,
}

impl fmt::Debug for Sso {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sso")
            .field("config", &self.config)
            .field("key", &self.keyring.current_key_id())
            .finish_non_exhaustive()
    }
}

impl Sso {
    /// Single sign-on over `flows` (sessions, tokens, audit), sealing client secrets with
    /// `keyring`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(flows: AuthFlows, keyring: Keyring, config: SsoConfig) -> Result<Self> {
        let http = GuardedHttpClient::new(config.outbound.clone())
            .map_err(|e| Error::Key(format!("sso http client: {e}")))?;
        Ok(Self {
            flows,
            keyring: Arc::new(keyring),
            config: Arc::new(config),
            http,
            providers: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    fn clock(&self) -> &Arc<dyn Clock> {
        self.flows.tokens().clock()
    }

    fn now(&self) -> OffsetDateTime {
        self.clock().now()
    }

    /// Connects the caller's tenant to an identity provider (admin+): the issuer is checked
    /// and discovered first (nothing is stored when it cannot be), the secret sealed, the
    /// domains recorded unverified (unless this tenant verified them already). Audited as
    /// `sso.connection_created`.
    ///
    /// # Errors
    /// `403` below admin; `422` for a bad field (an issuer that is not `https`, a multi-tenant
    /// template, one whose discovery failed; a bad domain; `owner` as the default role);
    /// `409` when the tenant has a connection to this issuer.
    pub async fn create_connection(
        &self,
        client: &ClientInfo,
        principal: &Principal,
        new: NewSsoConnection,
    ) -> Result<SsoConnection> {
        principal.require(Permission::ManageTenant)?;
        self.flows
            .limits()
            .check_account_action("sso_connection", principal.user_id())
            .await?;
        let issuer = check_issuer(&new.issuer, self.http.policy())?;
        if new.client_id.is_empty() || new.client_id.len() > 255 {
            return Err(invalid("client_id", "must be 1 to 255 characters"));
        }
        if new.client_secret.is_empty() || new.client_secret.len() > 1024 {
            return Err(invalid("client_secret", "must be 1 to 1024 characters"));
        }
        let domains = check_domains(&new.domains)?;
        let default_role = new.default_role.unwrap_or(Role::Member);
        if default_role == Role::Owner {
            return Err(invalid("default_role", "cannot be owner"));
        }
        // Discovered before anything is stored: a connection that cannot work is refused.
        let provider = self.discover_provider(&issuer).await.map_err(|err| {
            tracing::info!(issuer = %issuer, error = %err, "sso: discovery failed");
            invalid("issuer", "discovery failed: the provider's metadata could not be read or does not match this issuer")
        })?;
        let id = SsoConnectionId::new();
        let sealed = self
            .keyring
            .encrypt(new.client_secret.as_bytes(), &secret_context(id))
            .map_err(|e| Error::Core(e.into()))?;
        let now = self.now();
        let mut tx = self.flows.db().begin(&TenantScope::of(principal)).await?;
        let tenant = tx.tenant_id();
        with_conn!(&mut tx, |c| {
            sqlx::query(
                "INSERT INTO sso_connections (id, tenant_id, issuer, client_id, client_secret, \
                 default_role, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id)
            .bind(tenant)
            .bind(&issuer)
            .bind(&new.client_id)
            .bind(&sealed)
            .bind(default_role.as_str())
            .bind(now)
            .execute(&mut *c)
            .await?;
            for domain in &domains {
                // A domain another live connection of the tenant claimed stays that one's.
                sqlx::query(
                    "INSERT INTO sso_domains (tenant_id, domain, dns_token, created_at, \
                     connection_id) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (tenant_id, domain) DO UPDATE \
                     SET connection_id = excluded.connection_id \
                     WHERE sso_domains.connection_id IS NULL",
                )
                .bind(tenant)
                .bind(domain)
                .bind(OneTimeToken::generate().expose())
                .bind(now)
                .bind(id)
                .execute(&mut *c)
                .await?;
            }
            Ok::<(), sqlx::Error>(())
        })
        .map_err(|e| match tenantkit_core::Error::from(e) {
            tenantkit_core::Error::Conflict(_) => tenantkit_core::Error::Conflict(
                "the tenant has a connection to this issuer; delete it first".into(),
            ),
            other => other,
        })?;
        let event = client
            .event("sso.connection_created", Some(principal.user_id()))
            .target("sso_connection", id)
            .details(serde_json::json!({
                "issuer": issuer, "client_id": new.client_id, "domains": domains,
                "default_role": default_role.as_str(),
            }));
        tx.audit(event).await?;
        let connection = connection_view(&mut tx, tenant, id).await?;
        tx.commit().await?;
        self.remember(id, provider);
        connection.ok_or_else(|| tenantkit_core::Error::NotFound.into())
    }

    /// The caller's tenant's connections (admin+), oldest first; never their secrets.
    ///
    /// # Errors
    /// `403` below admin; storage errors.
    pub async fn connections(&self, principal: &Principal) -> Result<Vec<SsoConnection>> {
        principal.require(Permission::ManageTenant)?;
        let mut tx = self
            .flows
            .db()
            .begin_read(&TenantScope::of(principal))
            .await?;
        let tenant = tx.tenant_id();
        let ids = with_conn!(&mut tx, |c| {
            sqlx::query_scalar::<_, SsoConnectionId>(
                "SELECT id FROM sso_connections WHERE tenant_id = $1 ORDER BY id",
            )
            .bind(tenant)
            .fetch_all(c)
            .await
        })?;
        let mut all = Vec::with_capacity(ids.len());
        for id in ids {
            all.extend(connection_view(&mut tx, tenant, id).await?);
        }
        tx.commit().await?;
        Ok(all)
    }

    /// Deletes a connection of the caller's tenant (admin+); logins under way through it end.
    /// Accounts keep their links (a new connection to the same issuer finds them); its domains
    /// stay claimed (and verified) for the next connection that names them. Audited as
    /// `sso.connection_deleted`.
    ///
    /// # Errors
    /// `403` below admin; `404` for another tenant's or an unknown connection; `409` for the
    /// last connection of a tenant that requires single sign-on.
    pub async fn delete_connection(
        &self,
        client: &ClientInfo,
        principal: &Principal,
        id: SsoConnectionId,
    ) -> Result<()> {
        principal.require(Permission::ManageTenant)?;
        let mut tx = self.flows.db().begin(&TenantScope::of(principal)).await?;
        let tenant = tx.tenant_id();
        let issuer = with_conn!(&mut tx, |c| {
            sqlx::query_scalar::<_, String>(
                "DELETE FROM sso_connections WHERE id = $1 AND tenant_id = $2 RETURNING issuer",
            )
            .bind(id)
            .bind(tenant)
            .fetch_optional(c)
            .await
        })?
        .ok_or(tenantkit_core::Error::NotFound)?;
        // "SSO required" needs a connection: the last one stays while the policy is on.
        let (left, required) = with_conn!(&mut tx, |c| {
            let left = sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM sso_connections WHERE tenant_id = $1",
            )
            .bind(tenant)
            .fetch_one(&mut *c)
            .await?;
            let required = sqlx::query_scalar::<_, bool>(
                "SELECT sso_required FROM tenant_auth_policies WHERE tenant_id = $1",
            )
            .bind(tenant)
            .fetch_optional(&mut *c)
            .await?;
            Ok::<_, sqlx::Error>((left, required.unwrap_or(false)))
        })?;
        if left == 0 && required {
            return Err(tenantkit_core::Error::Conflict(
                "the tenant requires single sign-on: turn that off before deleting its last \
                 connection"
                    .into(),
            )
            .into());
        }
        let event = client
            .event("sso.connection_deleted", Some(principal.user_id()))
            .target("sso_connection", id)
            .details(serde_json::json!({ "issuer": issuer }));
        tx.audit(event).await?;
        tx.commit().await?;
        self.forget(id);
        Ok(())
    }

    /// Marks `domain` verified for the tenant `slug` (the operator's word, `sso verify-domain`).
    /// Audited as `sso.domain_verified`.
    ///
    /// # Errors
    /// `404` when the tenant does not claim the domain; `409` when another tenant verified it.
    pub async fn verify_domain(
        &self,
        client: &ClientInfo,
        slug: &Slug,
        domain: &str,
    ) -> Result<()> {
        let tenant = self
            .flows
            .db()
            .find_tenant_by_slug(slug)
            .await?
            .ok_or(tenantkit_core::Error::NotFound)?;
        self.mark_verified(client, tenant.id, None, domain, "operator")
            .await
    }

    /// Verifies a domain the caller's tenant claims (admin+) by its DNS TXT record (see
    /// [`SsoDomain::dns_record`]), read through `resolver`. Audited as `sso.domain_verified`.
    ///
    /// # Errors
    /// `403` below admin; `404` when the tenant does not claim the domain; `422` when the
    /// record is not there (yet); `409` when another tenant verified it.
    pub async fn verify_domain_by_dns(
        &self,
        client: &ClientInfo,
        principal: &Principal,
        domain: &str,
        resolver: &dyn TxtResolver,
    ) -> Result<()> {
        principal.require(Permission::ManageTenant)?;
        self.flows
            .limits()
            .check_account_action("sso_domain", principal.user_id())
            .await?;
        let domain = domain.trim().to_ascii_lowercase();
        let mut tx = self
            .flows
            .db()
            .begin_read(&TenantScope::of(principal))
            .await?;
        let tenant = tx.tenant_id();
        let token = with_conn!(&mut tx, |c| {
            sqlx::query_scalar::<_, String>(
                "SELECT dns_token FROM sso_domains WHERE tenant_id = $1 AND domain = $2",
            )
            .bind(tenant)
            .bind(&domain)
            .fetch_optional(c)
            .await
        })?
        .ok_or(tenantkit_core::Error::NotFound)?;
        tx.commit().await?;
        let record = dns_record(&domain, &token);
        let found = resolver.txt(&record.name).await?;
        let expected = record.value.as_bytes();
        if !found
            .iter()
            .any(|txt| bool::from(txt.trim().as_bytes().ct_eq(expected)))
        {
            return Err(invalid("domain", "the TXT record is not there (yet)"));
        }
        self.mark_verified(client, tenant, Some(principal.user_id()), &domain, "dns")
            .await
    }

    async fn mark_verified(
        &self,
        client: &ClientInfo,
        tenant: TenantId,
        actor: Option<UserId>,
        domain: &str,
        how: &str,
    ) -> Result<()> {
        let domain = domain.trim().to_ascii_lowercase();
        let mut tx = self
            .flows
            .db()
            .begin(&TenantScope::for_system(tenant))
            .await?;
        let now = self.now();
        let marked = with_conn!(&mut tx, |c| {
            sqlx::query(
                "UPDATE sso_domains SET verified_at = COALESCE(verified_at, $1) \
                 WHERE tenant_id = $2 AND domain = $3",
            )
            .bind(now)
            .bind(tenant)
            .bind(&domain)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
        })
        .map_err(|e| match tenantkit_core::Error::from(e) {
            tenantkit_core::Error::Conflict(_) => {
                tenantkit_core::Error::Conflict("another tenant verified this domain".into())
            }
            other => other,
        })?;
        if marked == 0 {
            return Err(tenantkit_core::Error::NotFound.into());
        }
        let event = client
            .event("sso.domain_verified", actor)
            .target("sso_domain", &domain)
            .details(serde_json::json!({ "by": how }));
        tx.audit(event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The login URL for `email`: of the tenant that verified its domain and has a
    /// connection. `None` otherwise (an unverified claim leads nowhere).
    ///
    /// # Errors
    /// [`Error::RateLimited`]; storage errors.
    pub async fn discover(&self, client: &ClientInfo, email: &str) -> Result<Option<SsoLoginUrl>> {
        self.flows.limits().check(Attempt::Login, client.ip).await?;
        let Ok(email) = Email::parse(email) else {
            return Ok(None);
        };
        let Some((_, domain)) = email.as_str().rsplit_once('@') else {
            return Ok(None);
        };
        let mut tx = self.flows.db().begin_system_read().await?;
        let slug = with_conn!(&mut tx, |c| {
            sqlx::query_scalar::<_, String>(
                "SELECT t.slug FROM sso_domains d JOIN tenants t ON t.id = d.tenant_id \
                 WHERE d.domain = $1 AND d.verified_at IS NOT NULL AND t.deleted_at IS NULL \
                 AND d.connection_id IS NOT NULL",
            )
            .bind(domain)
            .fetch_optional(c)
            .await
        })?;
        tx.commit().await?;
        Ok(slug
            .and_then(|s| Slug::parse(&s).ok())
            .map(|slug| SsoLoginUrl {
                login_url: self.config.login_url(&slug),
            }))
    }

    /// Starts a login into the tenant `slug` through its connection (the oldest, when it has
    /// several): the provider's URL and the cookie binding the login to this browser.
    /// `redirect_to` is where the app wants the browser back (only the public URL's, the app
    /// URL's or an allowed origin); `login_hint` is passed to the provider.
    ///
    /// # Errors
    /// `404` for an unknown tenant or one without a connection; `422` for a `redirect_to`
    /// that is not allowed; [`Error::Sso`] when the provider cannot be reached;
    /// [`Error::RateLimited`].
    pub async fn start_login(
        &self,
        client: &ClientInfo,
        slug: &str,
        redirect_to: Option<&str>,
        login_hint: Option<&str>,
    ) -> Result<LoginStart> {
        self.flows.limits().check(Attempt::Login, client.ip).await?;
        let redirect_to = match redirect_to {
            None => self.config.app_url.clone(),
            Some(target) => url::Url::parse(target)
                .ok()
                .filter(|t| self.config.allows_redirect(t))
                .ok_or_else(|| invalid("redirect_to", "is not an allowed address"))?,
        };
        self.start(slug, redirect_to, login_hint, None, None).await
    }

    /// A login the provider started (OpenID Connect Core §4, the connection's
    /// `initiate_login_uri`, `GET /v1/sso/{tenant_slug}/initiate`): it only bounces into the
    /// normal login ([`Sso::start_login`]) through the tenant's connection to `iss`, with the
    /// provider's `login_hint`; `target_link_uri` is kept when it is an allowed address (the
    /// app URL otherwise). Nothing is accepted from it but where to start: the callback that
    /// follows is checked as any other (a callback nobody started is always refused).
    ///
    /// # Errors
    /// `422` without `iss`; `404` for an unknown tenant or one without a connection to `iss`;
    /// as [`Sso::start_login`].
    pub async fn start_initiated(
        &self,
        client: &ClientInfo,
        slug: &str,
        params: &InitiatedParams,
    ) -> Result<LoginStart> {
        self.flows.limits().check(Attempt::Login, client.ip).await?;
        let issuer = params
            .iss
            .as_deref()
            .filter(|iss| !iss.is_empty())
            .ok_or_else(|| invalid("iss", "is required"))?;
        let redirect_to = params
            .target_link_uri
            .as_deref()
            .and_then(|t| url::Url::parse(t).ok())
            .filter(|t| self.config.allows_redirect(t))
            .unwrap_or_else(|| self.config.app_url.clone());
        self.start(
            slug,
            redirect_to,
            params.login_hint.as_deref(),
            Some(issuer),
            None,
        )
        .await
    }

    /// Asks for a link between the caller's account and its tenant's identity provider: a
    /// URL (`<public_url>/v1/sso/link/<ticket>`, single use, 2 minutes) for the caller's
    /// browser, which starts a login ([`Sso::start_link`]) whose identity is linked to this
    /// account. How an account with a password (which a provider's first sign-in never takes
    /// over) comes to sign in through its tenant's provider. The provider must vouch for
    /// the account's own address (verified), so a leaked URL links no one else's identity.
    ///
    /// # Errors
    /// `404` when the caller's tenant has no connection; [`Error::RateLimited`].
    pub async fn link_url(&self, principal: &Principal) -> Result<SsoLinkUrl> {
        self.flows
            .limits()
            .check_account_action("sso_link", principal.user_id())
            .await?;
        let tenant = principal.tenant_id();
        self.connection_of(tenant, None)
            .await?
            .ok_or(tenantkit_core::Error::NotFound)?;
        let ticket = OneTimeToken::generate();
        let now = self.now();
        let mut tx = self.flows.db().begin_system().await?;
        with_conn!(&mut tx, |c| {
            sqlx::query("DELETE FROM sso_link_tickets WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *c)
                .await?;
            sqlx::query(
                "INSERT INTO sso_link_tickets (ticket_hash, user_id, tenant_id, expires_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&ticket.hash()[..])
            .bind(principal.user_id())
            .bind(tenant)
            .bind(now + LINK_TTL)
            .execute(&mut *c)
            .await
            .map(drop)
        })?;
        tx.commit().await?;
        Ok(SsoLinkUrl {
            link_url: format!(
                "{}/v1/sso/link/{}",
                self.config.public_url.as_str().trim_end_matches('/'),
                ticket.expose()
            ),
        })
    }

    /// Opens a link ticket of [`Sso::link_url`] (once): the login, as [`Sso::start_login`]'s,
    /// that links the provider's identity to the ticket's account.
    ///
    /// # Errors
    /// `404` for an unknown, used or expired ticket; as [`Sso::start_login`].
    pub async fn start_link(&self, client: &ClientInfo, ticket: &str) -> Result<LoginStart> {
        self.flows.limits().check(Attempt::Login, client.ip).await?;
        if ticket.len() > 100 {
            return Err(tenantkit_core::Error::NotFound.into());
        }
        let now = self.now();
        let mut tx = self.flows.db().begin_system().await?;
        let row = with_conn!(&mut tx, |c| {
            sqlx::query_as::<_, (UserId, TenantId)>(
                "DELETE FROM sso_link_tickets WHERE ticket_hash = $1 AND expires_at > $2 \
                 RETURNING user_id, tenant_id",
            )
            .bind(&OneTimeToken::new(ticket).hash()[..])
            .bind(now)
            .fetch_optional(c)
            .await
        })?;
        tx.commit().await?;
        let (user, tenant) = row.ok_or(tenantkit_core::Error::NotFound)?;
        let tenant = self
            .flows
            .db()
            .find_tenant(tenant)
            .await?
            .ok_or(tenantkit_core::Error::NotFound)?;
        let app = self.config.app_url.clone();
        self.start(tenant.slug.as_str(), app, None, None, Some(user))
            .await
    }

    /// Sends a login into the tenant `slug` to its provider (the one of `issuer`, or its
    /// oldest connection).
    async fn start(
        &self,
        slug: &str,
        redirect_to: url::Url,
        login_hint: Option<&str>,
        issuer: Option<&str>,
        link_user: Option<UserId>,
    ) -> Result<LoginStart> {
        let slug = Slug::parse(slug).map_err(|_| tenantkit_core::Error::NotFound)?;
        let tenant = self
            .flows
            .db()
            .find_tenant_by_slug(&slug)
            .await?
            .filter(|t| t.deleted_at.is_none())
            .ok_or(tenantkit_core::Error::NotFound)?;
        let connection = match issuer {
            None => self.connection_of(tenant.id, None).await?,
            Some(issuer) => self.connection_by_issuer(tenant.id, issuer).await?,
        }
        .ok_or(tenantkit_core::Error::NotFound)?;
        let provider = self.provider(&connection).await?;
        let oidc = self.client(&connection, &provider)?;
        let state = OneTimeToken::generate();
        let nonce = OneTimeToken::generate();
        let browser = OneTimeToken::generate();
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = oidc
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                {
                    let s = state.expose().to_owned();
                    move || CsrfToken::new(s)
                },
                {
                    let n = nonce.expose().to_owned();
                    move || Nonce::new(n)
                },
            )
            .add_scope(Scope::new("email".to_owned()))
            .add_scope(Scope::new("profile".to_owned()))
            .set_pkce_challenge(challenge);
        if let Some(hint) = login_hint.filter(|h| !h.is_empty() && h.len() <= 320) {
            request = request.set_login_hint(LoginHint::new(hint.to_owned()));
        }
        let (location, _, _) = request.url();
        let sealed_verifier = self
            .keyring
            .encrypt(
                verifier.secret().as_bytes(),
                &verifier_context(&state.hash()),
            )
            .map_err(|e| Error::Core(e.into()))?;
        let now = self.now();
        let mut tx = self.flows.db().begin_system().await?;
        with_conn!(&mut tx, |c| {
            sqlx::query("DELETE FROM sso_logins WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *c)
                .await?;
            sqlx::query(
                "INSERT INTO sso_logins (state_hash, connection_id, tenant_id, browser_hash, \
                 nonce, pkce_verifier, redirect_to, link_user, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&state.hash()[..])
            .bind(connection.id)
            .bind(tenant.id)
            .bind(&browser.hash()[..])
            .bind(nonce.expose())
            .bind(&sealed_verifier)
            .bind(redirect_to.as_str())
            .bind(link_user)
            .bind(now + LOGIN_TTL)
            .execute(&mut *c)
            .await
            .map(drop)
        })?;
        tx.commit().await?;
        let secure = if self.config.public_url.scheme() == "https" {
            "; Secure"
        } else {
            ""
        };
        Ok(LoginStart {
            location: location.to_string(),
            set_cookie: format!(
                "{SSO_COOKIE}={}; Path={}/v1/sso; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
                browser.expose(),
                // Under the public URL's path, when it has one (behind a path prefix).
                self.config.public_url.path().trim_end_matches('/'),
                LOGIN_TTL.as_secs()
            ),
        })
    }

    /// The provider's redirect back: checks the login it answers (state, the browser's cookie,
    /// the issuer), exchanges the code, verifies the ID token, finds or (just in time) makes
    /// the account and its membership, and answers where to send the browser: the login's
    /// `redirect_to` with `sso_code=` (single use, 60 s) for [`Sso::exchange`].
    ///
    /// # Errors
    /// [`Error::Sso`] for an unknown, used or expired state, another browser's, a provider's
    /// refusal, a failed exchange or an ID token that does not verify; `403` when the account
    /// may not join the tenant (an unverified address, a domain the tenant has not verified);
    /// `409` when a password account has the address (it must link first).
    pub async fn callback(
        &self,
        client: &ClientInfo,
        params: &CallbackParams,
        browser_cookie: Option<&str>,
    ) -> Result<String> {
        self.flows.limits().check(Attempt::Login, client.ip).await?;
        let state = params
            .state
            .as_deref()
            .filter(|s| s.len() <= 100)
            .ok_or(Error::Sso("no state: a callback nobody started"))?;
        let login = self
            .take_login(&OneTimeToken::new(state).hash())
            .await?
            .ok_or(Error::Sso("unknown, used or expired state"))?;
        let bound = browser_cookie.is_some_and(|c| {
            bool::from(OneTimeToken::new(c).hash().ct_eq(&login.browser_hash[..]))
        });
        if !bound {
            return Err(self
                .failed(
                    client,
                    login.tenant,
                    "the login was started in another browser",
                )
                .await);
        }
        if let Some(error) = &params.error {
            tracing::info!(tenant = %login.tenant, error = %error.chars().take(64).collect::<String>(), "sso: the provider refused");
            return Err(self
                .failed(client, login.tenant, "the provider refused")
                .await);
        }
        let connection = self
            .connection_of(login.tenant, Some(login.connection))
            .await?
            .ok_or(Error::Sso("the connection was deleted"))?;
        // RFC 9207: a provider that names itself must be this connection's (mix-up attacks).
        if params
            .iss
            .as_deref()
            .is_some_and(|iss| iss != connection.issuer)
        {
            return Err(self.failed(client, login.tenant, "issuer mismatch").await);
        }
        let code = params
            .code
            .as_deref()
            .filter(|c| !c.is_empty() && c.len() <= 2048)
            .ok_or(Error::Sso("no code"))?;
        let identity = match self.identity(&connection, &login, code).await {
            Ok(identity) => identity,
            Err(reason) => return Err(self.failed(client, login.tenant, reason).await),
        };
        let user = match login.link_user {
            Some(account) => self.link(client, &connection, &identity, account).await?,
            None => self.account(client, &connection, &identity).await?.0,
        };
        let amr = std::iter::once(AMR_SSO.to_owned()).chain(identity.amr.iter().cloned());
        let code = OneTimeToken::generate();
        let token = format!("{CODE_PREFIX}{}", code.expose());
        let now = self.now();
        let mut tx = self.flows.db().begin_system().await?;
        with_conn!(&mut tx, |c| {
            sqlx::query("DELETE FROM sso_codes WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *c)
                .await?;
            sqlx::query(
                "INSERT INTO sso_codes (code_hash, user_id, tenant_id, credentials_epoch, amr, \
                 expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&OneTimeToken::new(token.clone()).hash()[..])
            .bind(user.id)
            .bind(login.tenant)
            .bind(user.credentials_epoch)
            .bind(AuthMethods::new(amr).to_column())
            .bind(now + CODE_TTL)
            .execute(&mut *c)
            .await
            .map(drop)
        })?;
        tx.commit().await?;
        let mut target = url::Url::parse(&login.redirect_to)
            .map_err(|_| Error::Sso("stored redirect is not a URL"))?;
        target.query_pairs_mut().append_pair("sso_code", &token);
        Ok(target.to_string())
    }

    /// Trades a callback's code for a session in its tenant: the token pair (`amr`: `sso`,
    /// and `sso_mfa` when the provider said it checked more than one factor) and the
    /// account's memberships. The code works once, for 60 seconds. An account with a second
    /// factor of this server's on gives it as after a password (a provider never vouches for
    /// it); the tenant's "MFA required" is met by `sso_mfa`.
    ///
    /// # Errors
    /// [`Error::InvalidToken`] for an unknown, used or expired code; [`Error::RateLimited`];
    /// [`Error::InvalidCredentials`] when the account's credentials changed meanwhile.
    pub async fn exchange(
        &self,
        client: &ClientInfo,
        request: &SsoExchange,
    ) -> Result<SignIn<LoggedIn>> {
        self.flows.limits().check(Attempt::Login, client.ip).await?;
        let unknown = Error::InvalidToken("unknown, used or expired sso code");
        if !request.code.starts_with(CODE_PREFIX) || request.code.len() > 100 {
            return Err(unknown);
        }
        let hash = OneTimeToken::new(request.code.clone()).hash();
        let now = self.now();
        let mut tx = self.flows.db().begin_system().await?;
        let row = with_conn!(&mut tx, |c| {
            sqlx::query_as::<_, (UserId, TenantId, i64, String)>(
                "DELETE FROM sso_codes WHERE code_hash = $1 AND expires_at > $2 \
                 RETURNING user_id, tenant_id, credentials_epoch, amr",
            )
            .bind(&hash[..])
            .bind(now)
            .fetch_optional(c)
            .await
        })?;
        tx.commit().await?;
        let Some((user_id, tenant, epoch, amr)) = row else {
            return Err(unknown);
        };
        let mut user = self
            .flows
            .db()
            .find_user(user_id)
            .await?
            .ok_or(Error::InvalidCredentials)?;
        user.credentials_epoch = epoch;
        let memberships = self.flows.db().memberships_of(user.id).await?;
        let membership = memberships
            .iter()
            .find(|m| m.tenant_id == tenant)
            .cloned()
            .ok_or(Error::InvalidCredentials)?;
        let signed_in = match self
            .flows
            .complete_sign_in(
                client,
                &user,
                &membership,
                AuthMethods::from(amr),
                None,
                SignInVia::Login,
            )
            .await
        {
            Err(Error::CredentialsChanged) => return Err(Error::InvalidCredentials),
            other => other?,
        };
        Ok(signed_in.map(|done| LoggedIn {
            tokens: done.tokens,
            memberships,
        }))
    }

    /// Audits a failed callback of `tenant`'s login and answers the error.
    async fn failed(&self, client: &ClientInfo, tenant: TenantId, reason: &'static str) -> Error {
        tracing::info!(tenant = %tenant, reason, "sso: login failed");
        let event = client
            .event("sso.failed", None)
            .target("tenant", tenant)
            .details(serde_json::json!({ "reason": reason }));
        if let Err(err) = self.flows.audit(tenant, event).await {
            tracing::error!(error = %err, "sso: auditing a failed login failed");
        }
        Error::Sso(reason)
    }

    /// The login `state_hash` names, taken (single use) while unexpired.
    async fn take_login(&self, state_hash: &[u8; 32]) -> Result<Option<PendingLogin>> {
        let now = self.now();
        let mut tx = self.flows.db().begin_system().await?;
        let row = with_conn!(&mut tx, |c| {
            sqlx::query_as::<_, LoginRow>(
                "DELETE FROM sso_logins WHERE state_hash = $1 AND expires_at > $2 \
                 RETURNING connection_id, tenant_id, browser_hash, nonce, pkce_verifier, \
                 redirect_to, link_user",
            )
            .bind(&state_hash[..])
            .bind(now)
            .fetch_optional(c)
            .await
        })?;
        tx.commit().await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let verifier = self
            .keyring
            .decrypt(&row.pkce_verifier, &verifier_context(state_hash))
            .map_err(|e| Error::Core(e.into()))?;
        let verifier = String::from_utf8(verifier.expose().to_vec())
            .map_err(|_| Error::Sso("stored verifier is not text"))?;
        Ok(Some(PendingLogin {
            connection: row.connection_id,
            tenant: row.tenant_id,
            browser_hash: row.browser_hash,
            nonce: row.nonce,
            verifier,
            redirect_to: row.redirect_to,
            link_user: row.link_user,
        }))
    }

    /// The connection `id` of `tenant` (or its oldest), with its secret still sealed.
    async fn connection_of(
        &self,
        tenant: TenantId,
        id: Option<SsoConnectionId>,
    ) -> Result<Option<ConnectionRow>> {
        let mut tx = self.flows.db().begin_system_read().await?;
        let row = with_conn!(&mut tx, |c| {
            sqlx::query_as::<_, ConnectionRow>(
                "SELECT id, tenant_id, issuer, client_id, client_secret, default_role, created_at \
                 FROM sso_connections WHERE tenant_id = $1 AND ($2 IS NULL OR id = $2) \
                 ORDER BY id LIMIT 1",
            )
            .bind(tenant)
            .bind(id)
            .fetch_optional(c)
            .await
        })?;
        tx.commit().await?;
        Ok(row)
    }

    /// The connection of `tenant` to `issuer`, if any.
    async fn connection_by_issuer(
        &self,
        tenant: TenantId,
        issuer: &str,
    ) -> Result<Option<ConnectionRow>> {
        let mut tx = self.flows.db().begin_system_read().await?;
        let row = with_conn!(&mut tx, |c| {
            sqlx::query_as::<_, ConnectionRow>(
                "SELECT id, tenant_id, issuer, client_id, client_secret, default_role, created_at \
                 FROM sso_connections WHERE tenant_id = $1 AND issuer = $2",
            )
            .bind(tenant)
            .bind(issuer)
            .fetch_optional(c)
            .await
        })?;
        tx.commit().await?;
        Ok(row)
    }

    /// The provider of `connection`: cached, discovered again when the cache is older than
    /// the metadata lifetime.
    async fn provider(&self, connection: &ConnectionRow) -> Result<Provider> {
        let now = self.now();
        if let Some(cached) = self.cached(connection.id)
            && now - cached.fetched_at < self.config.metadata_ttl
        {
            return Ok(cached);
        }
        let provider = self
            .discover_provider(&connection.issuer)
            .await
            .map_err(|err| {
                tracing::warn!(connection = %connection.id, error = %err, "sso: discovery failed");
                Error::Sso("the identity provider could not be reached")
            })?;
        self.remember(connection.id, provider.clone());
        Ok(provider)
    }

    async fn discover_provider(&self, issuer: &str) -> std::result::Result<Provider, String> {
        let issuer = IssuerUrl::new(issuer.to_owned()).map_err(|e| e.to_string())?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| discovery_error(&e))?;
        // The authorization endpoint is only the browser's, but a 302 to it must not be an
        // open redirect: the same rules as the others.
        for url in [
            Some(metadata.authorization_endpoint().url()),
            Some(metadata.jwks_uri().url()),
            metadata.token_endpoint().map(|u| u.url()),
        ]
        .into_iter()
        .flatten()
        {
            self.http
                .policy()
                .check_url(url)
                .map_err(|e| e.to_string())?;
        }
        if metadata.token_endpoint().is_none() {
            return Err("the provider has no token endpoint".into());
        }
        let offered = metadata.id_token_signing_alg_values_supported();
        if !ASYMMETRIC.iter().any(|a| offered.contains(a)) {
            return Err("the provider signs ID tokens with no asymmetric algorithm".into());
        }
        let now = self.now();
        Ok(Provider {
            jwks: metadata.jwks().clone(),
            metadata,
            fetched_at: now,
            jwks_fetched_at: now,
        })
    }

    fn cached(&self, id: SsoConnectionId) -> Option<Provider> {
        self.providers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    fn remember(&self, id: SsoConnectionId, provider: Provider) {
        let mut providers = self
            .providers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if providers.len() >= CACHE_CAPACITY && !providers.contains_key(&id) {
            let oldest = providers
                .iter()
                .min_by_key(|(_, p)| p.fetched_at)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                providers.remove(&oldest);
            }
        }
        providers.insert(id, provider);
    }

    fn forget(&self, id: SsoConnectionId) {
        self.providers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
    }

    /// The OpenID client of `connection`, its secret unsealed.
    fn client(&self, connection: &ConnectionRow, provider: &Provider) -> Result<Client> {
        let secret = self
            .keyring
            .decrypt(&connection.client_secret, &secret_context(connection.id))
            .map_err(|e| Error::Core(e.into()))?;
        let secret = String::from_utf8(secret.expose().to_vec())
            .map_err(|_| Error::Sso("stored secret is not text"))?;
        let token_url = provider
            .metadata
            .token_endpoint()
            .cloned()
            .ok_or(Error::Sso("the provider has no token endpoint"))?;
        let redirect = RedirectUrl::new(self.config.callback_url())
            .map_err(|_| Error::Sso("bad callback URL"))?;
        Ok(CoreClient::from_provider_metadata(
            provider.metadata.clone(),
            ClientId::new(connection.client_id.clone()),
            Some(ClientSecret::new(secret)),
        )
        .set_token_uri(token_url)
        .set_redirect_uri(redirect))
    }

    /// Exchanges `code` and verifies the ID token: the provider's identity of the user. The
    /// error is a reason for the audit log (never shown beyond "sso failed").
    async fn identity(
        &self,
        connection: &ConnectionRow,
        login: &PendingLogin,
        code: &str,
    ) -> std::result::Result<Identity, &'static str> {
        let provider = self
            .provider(connection)
            .await
            .map_err(|_| "the identity provider could not be reached")?;
        let oidc = self
            .client(connection, &provider)
            .map_err(|_| "the connection's client could not be built")?;
        let response = oidc
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(login.verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|err| {
                tracing::info!(connection = %connection.id, error = %token_error(&err), "sso: code exchange failed");
                "the code exchange failed"
            })?;
        let id_token = openidconnect::TokenResponse::id_token(&response)
            .ok_or("the provider answered no ID token")?;
        let client_id = ClientId::new(connection.client_id.clone());
        let nonce = Nonce::new(login.nonce.clone());
        let verify = |jwks: CoreJsonWebKeySet| {
            let verifier = self.verifier(&client_id, &provider.metadata, jwks);
            id_token.claims(&verifier, &nonce).cloned()
        };
        let claims = match verify(provider.jwks.clone()) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                let jwks = self
                    .fresh_jwks(connection, &provider)
                    .await
                    .ok_or("the ID token's key is unknown")?;
                verify(jwks)
            }
            other => other,
        }
        .map_err(|err| {
            tracing::info!(connection = %connection.id, error = %err, "sso: the ID token does not verify");
            claims_reason(&err)
        })?;
        // `azp` (OpenID Connect Core 3.1.3.7): when present, our client.
        if claims
            .authorized_party()
            .is_some_and(|azp| azp.as_str() != connection.client_id)
        {
            return Err("the ID token is for another client (azp)");
        }
        // The provider's methods are never stored as they come (it could claim `otp` for
        // anyone): only whether it checked more than one factor, as `sso_mfa`.
        let methods: Vec<String> = claims
            .auth_method_refs()
            .map(|refs| {
                refs.iter()
                    .map(|r| r.as_str().to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default();
        let mut distinct = methods.clone();
        distinct.sort();
        distinct.dedup();
        let amr = if methods.iter().any(|m| m == "mfa") || distinct.len() > 1 {
            vec![tenantkit_core::amr::SSO_MFA.to_owned()]
        } else {
            Vec::new()
        };
        Ok(Identity {
            issuer: connection.issuer.clone(),
            subject: claims.subject().as_str().to_owned(),
            email: claims.email().map(|e| e.as_str().to_owned()),
            email_verified: claims.email_verified() == Some(true),
            amr,
        })
    }

    /// The verifier of ID tokens from `metadata`'s provider for `client_id`: asymmetric
    /// algorithms it announced, one audience, a minute of leeway on `exp` and `iat`, on the
    /// tokens' clock.
    fn verifier(
        &self,
        client_id: &ClientId,
        metadata: &CoreProviderMetadata,
        jwks: CoreJsonWebKeySet,
    ) -> CoreIdTokenVerifier<'static> {
        let offered = metadata.id_token_signing_alg_values_supported().clone();
        let clock = Arc::clone(self.clock());
        let iat_clock = Arc::clone(self.clock());
        // A public-client verifier holds no secret: an HMAC-signed token cannot verify.
        CoreIdTokenVerifier::new_public_client(client_id.clone(), metadata.issuer().clone(), jwks)
            .set_allowed_algs(ASYMMETRIC.into_iter().filter(move |a| offered.contains(a)))
            .set_time_fn(move || chrono_now(&*clock) - chrono::TimeDelta::seconds(60))
            .set_issue_time_verifier_fn(move |iat| {
                if iat > chrono_now(&*iat_clock) + chrono::TimeDelta::seconds(60) {
                    Err("issued in the future".to_owned())
                } else {
                    Ok(())
                }
            })
    }

    /// The key set of `connection`'s provider fetched again, unless it was fetched less than
    /// the refresh interval ago (then `None`).
    async fn fresh_jwks(
        &self,
        connection: &ConnectionRow,
        provider: &Provider,
    ) -> Option<CoreJsonWebKeySet> {
        let now = self.now();
        {
            let mut providers = self
                .providers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let cached = providers.get_mut(&connection.id)?;
            if now - cached.jwks_fetched_at < self.config.jwks_refresh_interval {
                tracing::info!(connection = %connection.id, "sso: unknown key, key set fetched too recently");
                return None;
            }
            // Claimed before the fetch: concurrent logins fetch once.
            cached.jwks_fetched_at = now;
        }
        let jwks = CoreJsonWebKeySet::fetch_async(provider.metadata.jwks_uri(), &self.http)
            .await
            .map_err(|e| {
                tracing::warn!(connection = %connection.id, error = %discovery_error(&e), "sso: key set fetch failed");
            })
            .ok()?;
        let mut providers = self
            .providers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cached) = providers.get_mut(&connection.id) {
            cached.jwks = jwks.clone();
        }
        tracing::info!(connection = %connection.id, "sso: key set refreshed");
        Some(jwks)
    }

    /// The account `identity` signs in as, a member of the connection's tenant: linked by
    /// (issuer, subject); else, for an unknown address, made just in time (verified address
    /// in a domain the tenant verified). A linked account that is not a member joins by the
    /// same rule.
    async fn account(
        &self,
        client: &ClientInfo,
        connection: &ConnectionRow,
        identity: &Identity,
    ) -> Result<(User, tenantkit_core::Membership)> {
        let tenant = connection.tenant_id;
        let mut tx = self.flows.db().begin_system_read().await?;
        let linked = with_conn!(&mut tx, |c| {
            sqlx::query_scalar::<_, UserId>(
                "SELECT user_id FROM sso_identities WHERE issuer = $1 AND subject = $2",
            )
            .bind(&identity.issuer)
            .bind(&identity.subject)
            .fetch_optional(c)
            .await
        })?;
        tx.commit().await?;
        let existing = match linked {
            Some(user) => Some(
                self.flows
                    .db()
                    .find_user(user)
                    .await?
                    .ok_or(tenantkit_core::Error::NotFound)?,
            ),
            None => None,
        };
        if let Some(user) = &existing
            && let Some(membership) = self.flows.db().membership_of(user.id, tenant).await?
        {
            return Ok((user.clone(), membership));
        }
        // Joining (a new account, or a linked one new to this tenant): only a verified address
        // in a domain this tenant verified.
        let email = identity
            .email
            .as_deref()
            .and_then(|e| Email::parse(e).ok())
            .ok_or_else(|| self.refused(tenant, "the provider gave no usable email address"))?;
        if !identity.email_verified {
            return Err(self.refused(tenant, "the provider has not verified the email address"));
        }
        let domain = email
            .as_str()
            .rsplit_once('@')
            .map(|(_, d)| d.to_owned())
            .unwrap_or_default();
        let mut tx = self
            .flows
            .db()
            .begin(&TenantScope::for_system(tenant))
            .await?;
        tx.require_live_tenant().await?;
        let verified = with_conn!(&mut tx, |c| {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM sso_domains WHERE tenant_id = $1 AND domain = $2 \
                 AND verified_at IS NOT NULL AND connection_id = $3",
            )
            .bind(tenant)
            .bind(&domain)
            .bind(connection.id)
            .fetch_one(c)
            .await
        })?;
        if verified == 0 {
            return Err(self.refused(tenant, "the address's domain is not verified by the tenant"));
        }
        let role = connection
            .default_role
            .parse::<Role>()
            .unwrap_or(Role::Member);
        let user = match existing {
            Some(user) => user,
            None => {
                if self.flows.db().find_user_by_email(&email).await?.is_some() {
                    // Never taken over by email alone: the account proves itself first.
                    return Err(tenantkit_core::Error::Conflict(
                        "an account with this address exists: sign in with its password and \
                         link the identity provider from there"
                            .into(),
                    )
                    .into());
                }
                let user = tx
                    .create_user(NewUser {
                        email: email.clone(),
                        password_hash: None,
                    })
                    .await?;
                tx.mark_email_verified(user.id, self.now()).await?;
                link(&mut tx, identity, user.id, self.now()).await?;
                let event = client
                    .event("sso.linked", Some(user.id))
                    .target("user", user.id)
                    .details(serde_json::json!({ "issuer": identity.issuer }));
                tx.audit(event).await?;
                user
            }
        };
        let membership = self.flows.join_tenant(&mut tx, user.id, role).await?;
        let event = client
            .event("sso.jit_joined", Some(user.id))
            .target("user", user.id)
            .details(serde_json::json!({ "issuer": identity.issuer, "role": role.as_str() }));
        tx.audit(event).await?;
        tx.commit().await?;
        Ok((user, membership))
    }

    /// Links `identity` to `account` (a link the account asked for from a signed-in session):
    /// only when the provider vouches for the account's own address, and the identity is not
    /// another account's. The account must still be a member of the connection's tenant.
    async fn link(
        &self,
        client: &ClientInfo,
        connection: &ConnectionRow,
        identity: &Identity,
        account: UserId,
    ) -> Result<User> {
        let tenant = connection.tenant_id;
        let user = self
            .flows
            .db()
            .find_user(account)
            .await?
            .ok_or(tenantkit_core::Error::NotFound)?;
        let vouched = identity
            .email
            .as_deref()
            .and_then(|e| Email::parse(e).ok())
            .is_some_and(|e| e == user.email);
        if !vouched || !identity.email_verified {
            return Err(self.refused(
                tenant,
                "a link needs the provider to vouch for the account's own address",
            ));
        }
        if self
            .flows
            .db()
            .membership_of(user.id, tenant)
            .await?
            .is_none()
        {
            return Err(self.refused(tenant, "the account is no longer a member"));
        }
        let mut tx = self
            .flows
            .db()
            .begin(&TenantScope::for_system(tenant))
            .await?;
        let linked = with_conn!(&mut tx, |c| {
            sqlx::query_scalar::<_, UserId>(
                "SELECT user_id FROM sso_identities WHERE issuer = $1 AND subject = $2",
            )
            .bind(&identity.issuer)
            .bind(&identity.subject)
            .fetch_optional(c)
            .await
        })?;
        match linked {
            Some(owner) if owner == user.id => {}
            Some(_) => {
                return Err(tenantkit_core::Error::Conflict(
                    "this identity is linked to another account".into(),
                )
                .into());
            }
            None => {
                link(&mut tx, identity, user.id, self.now()).await?;
                let event = client
                    .event("sso.linked", Some(user.id))
                    .target("user", user.id)
                    .details(serde_json::json!({ "issuer": identity.issuer, "asked": true }));
                tx.audit(event).await?;
            }
        }
        tx.commit().await?;
        Ok(user)
    }

    fn refused(&self, tenant: TenantId, reason: &'static str) -> Error {
        tracing::info!(tenant = %tenant, reason, "sso: joining refused");
        Error::Core(tenantkit_core::Error::Forbidden)
    }
}

/// A login waiting for its callback.
struct PendingLogin {
    connection: SsoConnectionId,
    tenant: TenantId,
    browser_hash: Vec<u8>,
    nonce: String,
    verifier: String,
    redirect_to: String,
    link_user: Option<UserId>,
}

/// A stored login, as taken.
#[derive(sqlx::FromRow)]
struct LoginRow {
    connection_id: SsoConnectionId,
    tenant_id: TenantId,
    browser_hash: Vec<u8>,
    nonce: String,
    pkce_verifier: String,
    redirect_to: String,
    link_user: Option<UserId>,
}

/// Who the provider says signed in.
#[derive(Debug, Clone)]
struct Identity {
    issuer: String,
    subject: String,
    email: Option<String>,
    email_verified: bool,
    amr: Vec<String>,
}

async fn link(
    tx: &mut tenantkit_core::TenantTx,
    identity: &Identity,
    user: UserId,
    now: OffsetDateTime,
) -> Result<()> {
    with_conn!(tx, |c| {
        sqlx::query(
            "INSERT INTO sso_identities (issuer, subject, user_id, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&identity.issuer)
        .bind(&identity.subject)
        .bind(user)
        .bind(now)
        .execute(c)
        .await
        .map(drop)
    })?;
    Ok(())
}

/// The connection `id` of `tenant` as answered, read in `tx`.
async fn connection_view(
    tx: &mut tenantkit_core::TenantTx,
    tenant: TenantId,
    id: SsoConnectionId,
) -> Result<Option<SsoConnection>> {
    let Some(row) = with_conn!(tx, |c| {
        sqlx::query_as::<_, ConnectionRow>(
            "SELECT id, tenant_id, issuer, client_id, client_secret, default_role, created_at \
             FROM sso_connections WHERE id = $1 AND tenant_id = $2",
        )
        .bind(id)
        .bind(tenant)
        .fetch_optional(c)
        .await
    })?
    else {
        return Ok(None);
    };
    let domains = with_conn!(tx, |c| {
        sqlx::query_as::<_, (String, String, Option<OffsetDateTime>)>(
            "SELECT domain, dns_token, verified_at FROM sso_domains WHERE tenant_id = $1 \
             AND connection_id = $2 ORDER BY domain",
        )
        .bind(tenant)
        .bind(id)
        .fetch_all(c)
        .await
    })?;
    Ok(Some(SsoConnection {
        id: row.id,
        issuer: row.issuer,
        client_id: row.client_id,
        default_role: row.default_role.parse::<Role>().unwrap_or(Role::Member),
        domains: domains
            .into_iter()
            .map(|(domain, token, verified_at)| SsoDomain {
                dns_record: dns_record(&domain, &token),
                verified: verified_at.is_some(),
                domain,
            })
            .collect(),
        created_at: row.created_at,
    }))
}

fn dns_record(domain: &str, token: &str) -> DnsRecord {
    DnsRecord {
        name: format!("_tenantkit-challenge.{domain}"),
        value: format!("tenantkit-domain-verification={token}"),
    }
}

fn secret_context(id: SsoConnectionId) -> String {
    format!("sso-client-secret:{id}")
}

fn verifier_context(state_hash: &[u8; 32]) -> String {
    use base64::Engine as _;
    format!(
        "sso-pkce:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(state_hash)
    )
}

/// The issuer as the provider must publish it: an `https` URL (or an allow-listed host's
/// `http`), no query, fragment or credentials, not a multi-tenant template.
fn check_issuer(issuer: &str, policy: &OutboundPolicy) -> Result<String> {
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

fn check_domains(domains: &[String]) -> Result<Vec<String>> {
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

fn chrono_now(clock: &dyn Clock) -> chrono::DateTime<chrono::Utc> {
    let now = clock.now();
    chrono::DateTime::from_timestamp(now.unix_timestamp(), now.nanosecond())
        .unwrap_or_else(chrono::Utc::now)
}

fn discovery_error<E: std::error::Error>(err: &openidconnect::DiscoveryError<E>) -> String {
    match err {
        openidconnect::DiscoveryError::Request(e) => format!("request: {e}"),
        openidconnect::DiscoveryError::Response(status, _, _) => format!("status {status}"),
        openidconnect::DiscoveryError::Validation(why) => format!("invalid metadata: {why}"),
        openidconnect::DiscoveryError::Parse(_) => "unparseable metadata".to_owned(),
        _ => "discovery failed".to_owned(),
    }
}

fn token_error<E: std::error::Error>(
    err: &openidconnect::RequestTokenError<
        E,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >,
) -> String {
    match err {
        openidconnect::RequestTokenError::ServerResponse(r) => format!("provider: {}", r.error()),
        openidconnect::RequestTokenError::Request(e) => format!("request: {e}"),
        openidconnect::RequestTokenError::Parse(_, _) => "unparseable token response".to_owned(),
        openidconnect::RequestTokenError::Other(why) => why.clone(),
    }
}

fn claims_reason(err: &ClaimsVerificationError) -> &'static str {
    match err {
        ClaimsVerificationError::Expired(_) => "the ID token expired",
        ClaimsVerificationError::InvalidAudience(_) => "the ID token is for another audience",
        ClaimsVerificationError::InvalidIssuer(_) => "the ID token is from another issuer",
        ClaimsVerificationError::InvalidNonce(_) => "the ID token's nonce does not match",
        ClaimsVerificationError::SignatureVerification(_) => {
            "the ID token's signature does not verify"
        }
        _ => "the ID token does not verify",
    }
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
