//! JWT access tokens: issue and verify with a rotating [`KeySet`].

mod claims;
mod keys;
pub(crate) mod layer;
mod strict;

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tenantkit_core::{Clock, Principal, Role, SessionId, SystemClock, TenantId, UserId};

pub use claims::AccessClaims;
pub use keys::{Algorithm, KeySet, SigningKey, VerifyingKey, generate_ed25519_pem};
pub use strict::{CachedSessionCheck, CheckFuture, SessionCheck, SessionState};

use crate::{Error, Result};

/// The media type of a tenantkit access token (RFC 9068); other JWTs (ID tokens, tokens of
/// other systems signed by a shared key) are refused even with a valid signature.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// Longest token accepted, in bytes; larger ones are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Who issues access tokens and for whom. `new` has the secure defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// The `iss` claim, required on verification.
    pub issuer: String,
    /// The `aud` claim, required on verification.
    pub audience: String,
    /// Token lifetime (15 minutes).
    pub ttl: Duration,
    /// Clock skew tolerated on `exp`, `nbf` and `iat` (30 seconds).
    pub leeway: Duration,
}

impl JwtConfig {
    /// A configuration with a 15-minute lifetime and 30 seconds of leeway.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            ttl: Duration::from_secs(15 * 60),
            leeway: Duration::from_secs(30),
        }
    }
}

/// A freshly issued access token.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// Its `jti`.
    pub jti: String,
    /// When it expires (its `exp`): the [`Principal::expires_at`] of whoever presents it.
    pub expires_at: time::OffsetDateTime,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"..")
            .field("expires_in", &self.expires_in)
            .field("jti", &self.jti)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Issues and verifies access tokens. Cheap to clone; keys can be replaced while serving.
///
/// Verified tokens are remembered (keyed by their SHA-256, at most
/// [`VERIFIED_CACHE_CAPACITY`], never past their `exp`, all forgotten when the keys change),
/// so a client sending the same token again costs a hash and a lookup instead of a signature
/// check.
#[derive(Clone)]
pub struct AccessTokens {
    keys: Arc<RwLock<Arc<KeySet>>>,
    config: Arc<JwtConfig>,
    clock: Arc<dyn Clock>,
    verified: Arc<VerifiedCache>,
}

/// At most this many verified tokens are remembered.
pub const VERIFIED_CACHE_CAPACITY: usize = 16 * 1024;

const SHARDS: usize = 16;

/// Verified tokens by the SHA-256 of their text, in shards (one lock each), with the unix
/// time they stop being good.
struct VerifiedCache {
    shards: [std::sync::Mutex<Shard>; SHARDS],
}

/// One shard: token hash → (principal, unix time it stops being good).
type Shard = std::collections::HashMap<[u8; 32], (Principal, i64)>;

impl VerifiedCache {
    fn new() -> Self {
        Self {
            shards: std::array::from_fn(|_| std::sync::Mutex::new(Default::default())),
        }
    }

    fn key(token: &str) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(token.as_bytes()).into()
    }

    fn shard(&self, key: &[u8; 32]) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[usize::from(key[0]) % SHARDS]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, key: &[u8; 32], now: i64) -> Option<Principal> {
        let mut shard = self.shard(key);
        match shard.get(key) {
            Some((principal, until)) if now < *until => Some(principal.clone()),
            Some(_) => {
                shard.remove(key);
                None
            }
            None => None,
        }
    }

    fn insert(&self, key: [u8; 32], principal: Principal, until: i64, now: i64) {
        let mut shard = self.shard(&key);
        if shard.len() >= VERIFIED_CACHE_CAPACITY / SHARDS {
            shard.retain(|_, (_, until)| now < *until);
            if shard.len() >= VERIFIED_CACHE_CAPACITY / SHARDS {
                // Still full of live tokens: start over rather than grow.
                shard.clear();
            }
        }
        shard.insert(key, (principal, until));
    }

    fn clear(&self) {
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clear();
        }
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .len()
            })
            .sum()
    }
}

impl fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessTokens")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AccessTokens {
    /// Tokens signed by `keys`, checked against `config`, on the system clock.
    pub fn new(keys: KeySet, config: JwtConfig) -> Self {
        Self::with_clock(keys, config, Arc::new(SystemClock))
    }

    /// The same with an explicit clock (tests move it to check expiry).
    pub fn with_clock(keys: KeySet, config: JwtConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            keys: Arc::new(RwLock::new(Arc::new(keys))),
            config: Arc::new(config),
            clock,
            verified: Arc::new(VerifiedCache::new()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &JwtConfig {
        &self.config
    }

    /// The clock expiry is checked against: whoever keeps a verified token's session open
    /// (a WebSocket, a cache) ends it by the same clock, so a test that moves it moves both.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The keys in use now.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .map_or_else(|poisoned| poisoned.into_inner().clone(), |k| k.clone())
    }

    /// Replaces the keys (after a rotation or retirement), for every clone.
    pub fn replace_keys(&self, keys: KeySet) {
        let mut guard = self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = Arc::new(keys);
        // A retired key's tokens must stop working now, not when they would have expired.
        self.verified.clear();
    }

    /// How many verified tokens are remembered now (for metrics and tests).
    pub fn cached_tokens(&self) -> usize {
        self.verified.len()
    }

    /// Issues a token for `principal`, carrying its [`Principal::amr`] (how its session
    /// signed in). Its [`Principal::expires_at`] is not read: every token lives
    /// [`JwtConfig::ttl`].
    ///
    /// # Errors
    /// [`Error::Key`] when the key set only verifies, or signing fails.
    pub fn issue(&self, principal: &Principal) -> Result<IssuedToken> {
        let keys = self.keys();
        let signing = keys.signing().ok_or_else(|| {
            Error::Key("this key set only verifies (it holds public keys); it cannot issue".into())
        })?;
        let now = self.clock.now().unix_timestamp();
        let ttl = self.config.ttl.as_secs();
        let jti = uuid::Uuid::now_v7().to_string();
        let claims = AccessClaims {
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            sub: principal.user_id().to_string(),
            tid: principal.tenant_id().to_string(),
            role: principal.role().to_string(),
            scope: principal.scopes().collect::<Vec<_>>().join(" "),
            sid: principal.session_id().to_string(),
            amr: principal.amr().to_vec(),
            jti: jti.clone(),
            iat: now,
            nbf: now,
            exp: now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
        };
        let expires_at = time::OffsetDateTime::from_unix_timestamp(claims.exp)
            .map_err(|_| Error::Key("the token lifetime is out of range".into()))?;
        let mut header = jsonwebtoken::Header::new(signing.algorithm().jwt());
        header.kid = Some(signing.kid().to_owned());
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        let token = jsonwebtoken::encode(&header, &claims, signing.encoding())
            .map_err(|e| Error::Key(format!("signing failed: {e}")))?;
        Ok(IssuedToken {
            token,
            expires_in: ttl,
            jti,
            expires_at,
        })
    }

    /// Verifies a token and returns the caller it proves, with the token's `amr`
    /// ([`Principal::amr`]) and `exp` ([`Principal::expires_at`]).
    ///
    /// The key is chosen by `kid` and its own algorithm is required: the algorithm named in
    /// the token header is never trusted (no `none`, no RS/HS confusion).
    ///
    /// # Errors
    /// [`Error::InvalidToken`] or [`Error::TokenExpired`].
    pub fn verify(&self, token: &str) -> Result<Principal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Error::InvalidToken("token too large"));
        }
        let key = VerifiedCache::key(token);
        let now = self.clock.now().unix_timestamp();
        if let Some(principal) = self.verified.get(&key, now) {
            return Ok(principal);
        }
        let claims = self.verify_claims(token)?;
        let until = claims.exp;
        let principal = principal_from(claims)?;
        self.verified.insert(key, principal.clone(), until, now);
        Ok(principal)
    }

    /// Verifies a token and returns its claims.
    ///
    /// # Errors
    /// As [`AccessTokens::verify`].
    pub fn verify_claims(&self, token: &str) -> Result<AccessClaims> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Error::InvalidToken("token too large"));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Error::InvalidToken("malformed header"))?;
        let kid = header.kid.as_deref().ok_or(Error::InvalidToken("no kid"))?;
        let keys = self.keys();
        let key = keys
            .verifier(kid)
            .ok_or(Error::InvalidToken("unknown kid"))?;
        // The key decides the algorithm; a header that disagrees is an attack or a bug.
        if header.alg != key.algorithm().jwt() {
            return Err(Error::InvalidToken("algorithm does not match the key"));
        }
        if header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
            return Err(Error::InvalidToken("not an access token"));
        }
        let mut validation = jsonwebtoken::Validation::new(key.algorithm().jwt());
        validation.algorithms = vec![key.algorithm().jwt()];
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["iss", "aud", "sub", "exp", "nbf", "iat"]);
        // Time is checked below against our clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let data = jsonwebtoken::decode::<AccessClaims>(token, key.decoding(), &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                Error::InvalidToken(match e.kind() {
                    ErrorKind::InvalidSignature => "bad signature",
                    ErrorKind::InvalidIssuer => "wrong issuer",
                    ErrorKind::InvalidAudience => "wrong audience",
                    ErrorKind::InvalidAlgorithm => "wrong algorithm",
                    ErrorKind::MissingRequiredClaim(_) => "missing claim",
                    _ => "malformed token",
                })
            })?;
        self.check_times(&data.claims)?;
        Ok(data.claims)
    }

    fn check_times(&self, claims: &AccessClaims) -> Result<()> {
        let now = self.clock.now().unix_timestamp();
        let leeway = i64::try_from(self.config.leeway.as_secs()).unwrap_or(0);
        if claims.nbf > now + leeway || claims.iat > now + leeway {
            return Err(Error::InvalidToken("not valid yet"));
        }
        if claims.exp <= now - leeway {
            return Err(Error::TokenExpired);
        }
        Ok(())
    }
}

fn principal_from(claims: AccessClaims) -> Result<Principal> {
    let bad = |_| Error::InvalidToken("malformed claims");
    let user: UserId = claims.sub.parse().map_err(bad)?;
    let tenant: TenantId = claims.tid.parse().map_err(bad)?;
    let session: SessionId = claims.sid.parse().map_err(bad)?;
    let role: Role = claims
        .role
        .parse()
        .map_err(|_| Error::InvalidToken("malformed claims"))?;
    let expires_at = time::OffsetDateTime::from_unix_timestamp(claims.exp)
        .map_err(|_| Error::InvalidToken("malformed claims"))?;
    let scopes = claims.scope.split_whitespace().map(str::to_owned);
    Ok(Principal::new(user, tenant, role, scopes, session)
        .with_amr(claims.amr)
        .with_expires_at(expires_at))
}
