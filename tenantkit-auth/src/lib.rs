//! # tenantkit-auth
//!
//! Authentication for multi-tenant services: passwords, JWT access tokens, refresh sessions
//! and the sign-in flows, as framework-agnostic tower layers over the `http` types (with
//! axum extractors behind the `axum` feature).
//!
//! ## In a few lines
//!
//! Open a database (`sqlite` or `postgres` feature), apply this crate's migrations, and build
//! [`flows::AuthFlows`] from an access-token issuer and the refresh sessions. Every flow takes
//! the calling client (its address keys the rate limits) and answers tokens; a protected route
//! verifies the access token into a [`tenantkit_core::Principal`] ([`JwtAuthLayer`] does it for
//! a whole router).
//!
//! ```
//! use tenantkit_auth::flows::{AuthFlows, LoginRequest, SignupOutcome, SignupRequest};
//! use tenantkit_auth::{AccessTokens, JwtConfig, KeySet, Password, RefreshConfig};
//! use tenantkit_auth::{RefreshSessions, SigningKey};
//! use tenantkit_core::{ClientInfo, Database, Migrations, Role};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> tenantkit_auth::Result<()> {
//! let db = Database::connect("sqlite::memory:").await?; // or "postgres://..."
//! db.migrate(&Migrations::new().with(tenantkit_auth::migrations())).await?;
//! // In production: `KeySet::from_pem_file`, or a rotating `KeyDir`; the same for the secret.
//! let keys = KeySet::new(SigningKey::generate_ed25519()?);
//! let tokens = AccessTokens::new(keys, JwtConfig::new("https://auth.example", "example-api"));
//! let sessions = RefreshSessions::new(db.clone(), &[7; 32], RefreshConfig::default())?;
//! let flows = AuthFlows::new(db, tokens, sessions);
//!
//! let client = ClientInfo::new([203, 0, 113, 9].into()); // the caller's address
//! let password = || Password::new("correct horse battery staple");
//! let email = "ada@example.com".to_owned();
//! let signup = SignupRequest {
//!     email: email.clone(),
//!     password: password(),
//!     tenant_name: "Acme".into(),
//!     tenant_slug: None,
//! };
//! let outcome = flows.signup(&client, signup).await?;
//! assert!(matches!(outcome, SignupOutcome::SignedIn(_)));
//!
//! let login = LoginRequest { email, password: password(), tenant: None };
//! // `SignIn::MfaRequired` instead for an account with a second factor on.
//! let logged_in = flows.login(&client, login).await?.into_complete()?;
//! let caller = flows.tokens().verify(&logged_in.tokens.access_token)?;
//! assert_eq!(caller.role(), Role::Owner); // the owner of the tenant they signed up
//! # Ok(())
//! # }
//! ```
//!
//! ## What is inside
//!
//! - [`PasswordHasher`]: argon2id (OWASP parameters by default) on a bounded blocking pool,
//!   constant-work verification for unknown accounts, rehash detection, and a
//!   [`PasswordPolicy`] with a 19,640-entry common-password list;
//! - [`AccessTokens`]: JWT access tokens (EdDSA by default; RS256, ES256, HS256) signed by a
//!   rotating [`KeySet`], verified by `kid` with the key's own algorithm, never the header's;
//!   keys from PEM files or a rotating folder ([`KeyDir`]), or verify-only from public keys
//!   or a JWKS;
//! - [`JwtAuthLayer`]: puts the verified [`tenantkit_core::Principal`] in request extensions or
//!   answers 401; [`RequireLayer`] answers 403 for a missing permission or scope;
//! - [`RefreshSessions`]: opaque refresh tokens stored only hashed, rotated on every use,
//!   with a grace window for concurrent refreshes and family revocation on reuse, over a
//!   [`SessionStore`] (in memory, or tenantkit-core's database with `sqlite`/`postgres`);
//! - [`Revocations`]: the one path every revocation takes (written once, in the caller's
//!   transaction where it has one, then published on a [`RevocationBus`] after the commit),
//!   which [`CachedSessionCheck::with_revocations`] listens to;
//! - [`flows`] (with `sqlite`/`postgres`): signup, login, refresh, logout, tenant switch,
//!   password change and reset, email verification, invitations and the operator's commands,
//!   each with its rate limits ([`AuthLimits`]: in memory by default, or a shared store) and
//!   audit entries, over this crate's own tables ([`migrations`]);
//! - `extract` (feature `axum`): `IntoResponse` for [`Error`] and the axum extractors
//!   (`Principal`, `Option<Principal>`, the client, a tenant transaction, ...).
//! - `routes` (feature `axum`, with a backend): the flows as mountable axum routes (signup,
//!   login, refresh, logout, logout-all), for any app state.
//! - `mfa` and the flows' second factor (TOTP with recovery codes) and tenant policies ("MFA
//!   required", "SSO required"), with a backend.
//! - `sso` (feature `sso`, with a backend): per-tenant OpenID Connect single sign-on (PKCE,
//!   state bound to the browser, ID tokens verified against the provider's rotating keys,
//!   accounts linked by subject, just-in-time membership for verified domains) over an
//!   SSRF-guarded HTTP client.
//!
//! Verifying needs no database at all:
//!
//! ```
//! use tenantkit_auth::{AccessTokens, JwtConfig, KeySet, SigningKey};
//! use tenantkit_core::{Principal, Role, SessionId, TenantId, UserId};
//!
//! # fn main() -> tenantkit_auth::Result<()> {
//! let tokens = AccessTokens::new(
//!     KeySet::new(SigningKey::generate_ed25519()?),
//!     JwtConfig::new("https://auth.example", "example-api"),
//! );
//! let caller = Principal::new(UserId::new(), TenantId::new(), Role::Admin, [], SessionId::new());
//! let issued = tokens.issue(&caller)?;
//! assert_eq!(tokens.verify(&issued.token)?, caller.with_expires_at(issued.expires_at));
//! assert!(tokens.verify("not.a.token").is_err());
//! # Ok(())
//! # }
//! ```
#![doc(test(attr(deny(warnings))))]
// Without a database backend, the flows, the migrations and the transaction types do not
// exist, so the links to them in these docs cannot resolve; every link is still checked in a
// build with a backend (CI documents the workspace with both).
#![cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(rustdoc::broken_intra_doc_links)
)]

mod authorize;
mod error;
#[cfg(feature = "axum")]
pub mod extract;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod flows;
mod future;
pub mod jwt;
pub mod key_dir;
mod mailer;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod mfa;
mod password;
mod rate_limit;
pub mod refresh;
mod revocation;
#[cfg(all(feature = "axum", any(feature = "sqlite", feature = "postgres")))]
pub mod routes;
#[cfg(feature = "smtp")]
mod smtp;
#[cfg(all(feature = "sso", any(feature = "sqlite", feature = "postgres")))]
pub mod sso;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod store;

pub use authorize::{Require, RequireLayer, RequirePermissionLayer, RequireScopeLayer};
pub use error::{
    Error, Result, mfa_enrollment_required_problem, mfa_required_problem, problem_response,
};
pub use future::ResponseFuture;
pub use jwt::layer::{
    JwtAuth, JwtAuthLayer, StrictJwtAuth, StrictJwtAuthLayer, StrictResponseFuture, bearer_token,
};
pub use jwt::{
    AccessClaims, AccessTokens, Algorithm, CachedSessionCheck, CheckFuture, IssuedToken, JwtConfig,
    KeySet, SessionCheck, SessionState, SigningKey, VERIFIED_CACHE_CAPACITY, VerifyingKey,
    generate_ed25519_pem,
};
pub use key_dir::KeyDir;
pub use mailer::{
    LogMailer, Mailer, MemoryMailer, Message, OneTimeToken, OutboxMailer, SendFuture,
};
pub use password::{HasherStats, Password, PasswordHasher, PasswordPolicy, Verification};
#[cfg(feature = "redis")]
pub use rate_limit::RedisLimits;
pub use rate_limit::{
    Attempt, AuthLimits, ClientNetwork, LimitFuture, RateLimitConfig, RateLimits,
};
pub use refresh::{
    AuthMethods, MemorySessionStore, RefreshConfig, RefreshSessions, RefreshToken,
    RefreshTokenRecord, SessionRecord, SessionStore,
};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use revocation::CommitHook;
pub use revocation::{LocalRevocationBus, Revocation, RevocationBus, RevocationScope, Revocations};
#[cfg(feature = "smtp")]
pub use smtp::SmtpMailer;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use store::{TokenPurpose, migrations};
