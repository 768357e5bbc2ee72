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

mod accounts;
mod config;
mod connections;
mod http;
mod login;
mod provider;
mod types;

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

pub use config::SsoConfig;
use config::{check_domains, check_issuer};
use connections::secret_context;
pub use http::{DEFAULT_MAX_BODY, GuardedHttpClient, OutboundError, OutboundPolicy};
pub use types::{
    CallbackParams, DnsRecord, InitiatedParams, LoginParams, LoginStart, NewSsoConnection,
    SsoConnection, SsoDiscover, SsoDomain, SsoExchange, SsoLinkUrl, SsoLoginUrl, TxtResolver,
    browser_cookie,
};

use crate::flows::{AuthFlows, LoggedIn, SignIn};
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

fn invalid(field: &str, message: &str) -> Error {
    Error::Core(tenantkit_core::Error::Validation(vec![FieldError::new(
        field, message,
    )]))
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

/// The connection of `tenant` with `id` or to `issuer` when given (else its oldest), read in
/// `tx`.
async fn find_connection<T: tenantkit_core::Transaction>(
    tx: &mut T,
    tenant: TenantId,
    id: Option<SsoConnectionId>,
    issuer: Option<&str>,
) -> Result<Option<ConnectionRow>> {
    Ok(with_conn!(tx, |c| {
        sqlx::query_as::<_, ConnectionRow>(
            "SELECT id, tenant_id, issuer, client_id, client_secret, default_role, created_at \
             FROM sso_connections WHERE tenant_id = $1 AND ($2 IS NULL OR id = $2) \
             AND ($3 IS NULL OR issuer = $3) ORDER BY id LIMIT 1",
        )
        .bind(tenant)
        .bind(id)
        .bind(issuer)
        .fetch_optional(c)
        .await
    })?)
}
