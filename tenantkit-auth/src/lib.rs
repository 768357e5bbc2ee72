//! # tenantkit-auth
//!
//! Authentication for multi-tenant services, as framework-agnostic tower layers over the
//! `http` types:
//!
//! - [`PasswordHasher`]: argon2id (OWASP parameters by default) on a bounded blocking pool,
//!   constant-work verification for unknown accounts, rehash detection, and a
//!   [`PasswordPolicy`] with a 19,640-entry common-password list;
//! - [`AccessTokens`]: JWT access tokens (EdDSA by default; RS256, ES256, HS256) signed by a
//!   rotating [`KeySet`], verified by `kid` with the key's own algorithm, never the header's;
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
//!   each with its rate limits and audit entries, over this crate's own tables
//!   ([`migrations`]);
//! - `extract` (feature `axum`): `IntoResponse` for [`Error`] and the axum extractors
//!   (`Principal`, `Option<Principal>`, the client, a tenant transaction, ...).
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

mod authorize;
mod error;
#[cfg(feature = "axum")]
pub mod extract;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod flows;
mod future;
pub mod jwt;
mod mailer;
mod password;
mod rate_limit;
pub mod refresh;
mod revocation;
#[cfg(feature = "smtp")]
mod smtp;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod store;

pub use authorize::{Require, RequireLayer, RequirePermissionLayer, RequireScopeLayer};
pub use error::{Error, Result, problem_response};
pub use future::ResponseFuture;
pub use jwt::layer::{
    JwtAuth, JwtAuthLayer, StrictJwtAuth, StrictJwtAuthLayer, StrictResponseFuture, bearer_token,
};
pub use jwt::{
    AccessClaims, AccessTokens, Algorithm, CachedSessionCheck, CheckFuture, IssuedToken, JwtConfig,
    KeySet, SessionCheck, SessionState, SigningKey, VERIFIED_CACHE_CAPACITY, VerifyingKey,
    generate_ed25519_pem,
};
pub use mailer::{
    LogMailer, Mailer, MemoryMailer, Message, OneTimeToken, OutboxMailer, SendFuture,
};
pub use password::{HasherStats, Password, PasswordHasher, PasswordPolicy, Verification};
pub use rate_limit::{Attempt, AuthLimits, ClientNetwork, RateLimitConfig, RateLimits};
pub use refresh::{
    AuthMethods, MemorySessionStore, RefreshConfig, RefreshSessions, RefreshToken,
    RefreshTokenRecord, SessionRecord, SessionStore,
};
pub use revocation::{
    CommitHook, LocalRevocationBus, Revocation, RevocationBus, RevocationScope, Revocations,
};
#[cfg(feature = "smtp")]
pub use smtp::SmtpMailer;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use store::{TokenPurpose, migrations};
