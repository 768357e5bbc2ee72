//! Signing keys, each with one fixed algorithm and a `kid`, and the rotating key set.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, KeypairBytes};
use jsonwebtoken::jwk::{Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The signature algorithms tenantkit issues and accepts. Each key has exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// Ed25519 (the default): small keys, fast, no parameter pitfalls.
    EdDSA,
    /// RSASSA-PKCS1-v1_5 with SHA-256, for verifiers that only speak RSA.
    RS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// HMAC-SHA-256 with a shared secret: only when issuer and verifier are one service.
    HS256,
}

impl Algorithm {
    pub(crate) fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::HS256 => jsonwebtoken::Algorithm::HS256,
        }
    }
}

/// A key that verifies tokens: a `kid`, its algorithm, and (for public-key algorithms) the
/// JWK published at `/.well-known/jwks.json`.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: String,
    algorithm: Algorithm,
    decoding: DecodingKey,
    public_jwk: Option<Jwk>,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

impl VerifyingKey {
    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The public JWK, `None` for HMAC keys (whose secret must never be published).
    pub fn public_jwk(&self) -> Option<&Jwk> {
        self.public_jwk.as_ref()
    }

    /// A verify-only key from a public JWK (for example another service's JWKS). The JWK
    /// must name its `kid` and algorithm.
    ///
    /// # Errors
    /// [`Error::Key`] for a JWK without `kid`/`alg`, or an unsupported one.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self> {
        let kid = jwk
            .common
            .key_id
            .clone()
            .ok_or_else(|| Error::Key("JWK has no kid".into()))?;
        let algorithm = match jwk.common.key_algorithm.map(|a| a.to_string()).as_deref() {
            Some("EdDSA") => Algorithm::EdDSA,
            Some("RS256") => Algorithm::RS256,
            Some("ES256") => Algorithm::ES256,
            other => return Err(Error::Key(format!("unsupported JWK algorithm {other:?}"))),
        };
        let decoding = DecodingKey::from_jwk(jwk).map_err(|e| Error::Key(e.to_string()))?;
        Ok(Self {
            kid,
            algorithm,
            decoding,
            public_jwk: Some(jwk.clone()),
        })
    }
}

/// A key that signs tokens (and verifies its own).
#[derive(Clone)]
pub struct SigningKey {
    encoding: EncodingKey,
    verifying: VerifyingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key material.
        f.debug_struct("SigningKey")
            .field("kid", &self.verifying.kid)
            .field("algorithm", &self.verifying.algorithm)
            .finish_non_exhaustive()
    }
}

/// A freshly generated Ed25519 private key in PKCS#8 PEM, for persisting dev keys.
///
/// # Errors
/// [`Error::Key`] when encoding fails.
pub fn generate_ed25519_pem() -> Result<String> {
    let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
    .map(|pem| pem.to_string())
    .map_err(|e| Error::Key(format!("cannot encode Ed25519 key: {e}")))
}

/// jsonwebtoken wants PKCS#8 v1 (no embedded public key); accept v1 and v2 PEMs and
/// normalize to v1 DER.
fn ed25519_encoding_key(pem: &[u8]) -> Result<EncodingKey> {
    let text = std::str::from_utf8(pem).map_err(|_| Error::Key("PEM is not text".into()))?;
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(text)
        .map_err(|e| Error::Key(format!("not an Ed25519 private key: {e}")))?;
    let der = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_der()
    .map_err(|e| Error::Key(format!("cannot encode Ed25519 key: {e}")))?;
    Ok(EncodingKey::from_ed_der(der.as_bytes()))
}

impl SigningKey {
    /// A new random Ed25519 key (kept in memory only).
    ///
    /// # Errors
    /// [`Error::Key`] when generation fails.
    pub fn generate_ed25519() -> Result<Self> {
        Self::from_pem(Algorithm::EdDSA, generate_ed25519_pem()?.as_bytes())
    }

    /// Loads a PKCS#8 (or, for RSA, PKCS#1) PEM private key for `algorithm`. The `kid` is the
    /// key's RFC 7638 thumbprint, so the same key always has the same id.
    ///
    /// # Errors
    /// [`Error::Key`] when the PEM is not a key of that algorithm.
    pub fn from_pem(algorithm: Algorithm, pem: &[u8]) -> Result<Self> {
        let encoding = match algorithm {
            Algorithm::EdDSA => return Self::from_encoding(algorithm, ed25519_encoding_key(pem)?),
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
            Algorithm::HS256 => {
                return Err(Error::Key(
                    "HS256 keys are secrets; use SigningKey::hmac".into(),
                ));
            }
        }
        .map_err(|e| Error::Key(format!("not a {algorithm:?} private key: {e}")))?;
        Self::from_encoding(algorithm, encoding)
    }

    fn from_encoding(algorithm: Algorithm, encoding: EncodingKey) -> Result<Self> {
        let mut jwk = Jwk::from_encoding_key(&encoding, algorithm.jwt())
            .map_err(|e| Error::Key(format!("cannot derive the public key: {e}")))?;
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| Error::Key(format!("cannot compute the key id: {e}")))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| Error::Key(e.to_string()))?;
        // Prove the pair before trusting it: a mismatched key would fail every request later.
        let verifying = VerifyingKey {
            kid,
            algorithm,
            decoding,
            public_jwk: Some(jwk),
        };
        let key = Self {
            encoding,
            verifying,
        };
        key.self_test()?;
        Ok(key)
    }

    /// An HS256 key from a shared secret of at least 32 bytes, with an explicit `kid`.
    ///
    /// # Errors
    /// [`Error::Key`] for a short secret or an empty `kid`.
    pub fn hmac(kid: impl Into<String>, secret: &[u8]) -> Result<Self> {
        let kid = kid.into();
        if secret.len() < 32 {
            return Err(Error::Key(
                "an HS256 secret must be at least 32 bytes".into(),
            ));
        }
        if kid.is_empty() {
            return Err(Error::Key("a key needs a kid".into()));
        }
        let verifying = VerifyingKey {
            kid,
            algorithm: Algorithm::HS256,
            decoding: DecodingKey::from_secret(secret),
            public_jwk: None,
        };
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            verifying,
        })
    }

    fn self_test(&self) -> Result<()> {
        let header = jsonwebtoken::Header::new(self.verifying.algorithm.jwt());
        let token = jsonwebtoken::encode(&header, &serde_json::json!({"t": 1}), &self.encoding)
            .map_err(|e| Error::Key(format!("key cannot sign: {e}")))?;
        let mut validation = jsonwebtoken::Validation::new(self.verifying.algorithm.jwt());
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        jsonwebtoken::decode::<serde_json::Value>(&token, &self.verifying.decoding, &validation)
            .map(drop)
            .map_err(|e| Error::Key(format!("key cannot verify its own signature: {e}")))
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.verifying.kid
    }

    /// The one algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.verifying.algorithm
    }

    /// The verifying half.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.verifying
    }

    pub(crate) fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }
}

/// The keys in use: one that signs, and every key that still verifies (the signing key and
/// older keys that have been rotated out but not retired yet). Immutable; rotation makes a
/// new set.
#[derive(Debug, Clone)]
pub struct KeySet {
    signing: Arc<SigningKey>,
    verifying: BTreeMap<String, VerifyingKey>,
}

impl KeySet {
    /// A set whose only key is `signing`.
    pub fn new(signing: SigningKey) -> Self {
        let mut verifying = BTreeMap::new();
        verifying.insert(signing.kid().to_owned(), signing.verifying_key().clone());
        Self {
            signing: Arc::new(signing),
            verifying,
        }
    }

    /// Adds a verify-only key (an older key still honoured).
    pub fn with_verifier(mut self, key: VerifyingKey) -> Self {
        self.verifying.insert(key.kid.clone(), key);
        self
    }

    /// Rotation: `next` signs from now on; the previous signing key keeps verifying until
    /// [`KeySet::retire`]d, so tokens already issued stay valid until they expire.
    pub fn rotate(&self, next: SigningKey) -> Self {
        let mut set = self.clone().with_verifier(next.verifying_key().clone());
        set.signing = Arc::new(next);
        set
    }

    /// Stops honouring a key. The signing key cannot be retired.
    ///
    /// # Errors
    /// [`Error::Key`] when `kid` is the signing key.
    pub fn retire(&self, kid: &str) -> Result<Self> {
        if kid == self.signing.kid() {
            return Err(Error::Key(
                "the signing key cannot be retired; rotate first".into(),
            ));
        }
        let mut set = self.clone();
        set.verifying.remove(kid);
        Ok(set)
    }

    /// The key that signs new tokens.
    pub fn signing(&self) -> &SigningKey {
        &self.signing
    }

    /// The verifying key with this `kid`, compared exactly (never used as a path or query).
    pub fn verifier(&self, kid: &str) -> Option<&VerifyingKey> {
        self.verifying.get(kid)
    }

    /// Every key that verifies.
    pub fn verifiers(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.verifying.values()
    }

    /// `{"keys": [...]}` with the public keys only; HMAC keys are never listed.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<&Jwk> = self
            .verifying
            .values()
            .filter_map(VerifyingKey::public_jwk)
            .collect();
        serde_json::json!({ "keys": keys })
    }
}
