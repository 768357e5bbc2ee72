//! Signing keys, each with one fixed algorithm and a `kid`, and the rotating key set.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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
    /// must name its `kid` and algorithm (`EdDSA` on `OKP`/`Ed25519`, `ES256` on `EC`/`P-256`,
    /// `RS256` on `RSA` of at least 2048 bits); its `use`, when given, must be `sig`, and its
    /// `key_ops`, when given, must include `verify`. The key is checked now, so a malformed
    /// one fails here rather than on every request.
    ///
    /// A parsed [`Jwk`] keeps only public members; to refuse documents that carry private
    /// ones, load whole documents with [`KeySet::from_jwks`].
    ///
    /// # Errors
    /// [`Error::Key`] for a JWK without `kid`/`alg`, of another use, an unsupported algorithm,
    /// a key type or curve that does not match its algorithm, or a malformed key.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self> {
        use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, KeyOperations};
        let kid = jwk
            .common
            .key_id
            .clone()
            .filter(|kid| !kid.is_empty())
            .ok_or_else(|| Error::Key("JWK has no kid".into()))?;
        let bad = |why: &str| Error::Key(format!("JWK {kid:?}: {why}"));
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != PublicKeyUse::Signature)
        {
            return Err(bad("its use is not \"sig\""));
        }
        if jwk
            .common
            .key_operations
            .as_ref()
            .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
        {
            return Err(bad("its key_ops do not include \"verify\""));
        }
        let algorithm = match jwk.common.key_algorithm.map(|a| a.to_string()).as_deref() {
            Some("EdDSA") => Algorithm::EdDSA,
            Some("RS256") => Algorithm::RS256,
            Some("ES256") => Algorithm::ES256,
            other => return Err(bad(&format!("unsupported algorithm {other:?}"))),
        };
        // The key type must be the algorithm's: the algorithm is fixed per key, so a key
        // that could be read as another family must never load.
        let fits = match (&jwk.algorithm, algorithm) {
            (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
                p.curve == EllipticCurve::Ed25519
            }
            (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => {
                p.curve == EllipticCurve::P256
            }
            (AlgorithmParameters::RSA(p), Algorithm::RS256) => {
                let n = URL_SAFE_NO_PAD
                    .decode(&p.n)
                    .map_err(|_| bad("malformed RSA modulus"))?;
                let significant = n.iter().skip_while(|b| **b == 0).count();
                if significant < 256 {
                    return Err(bad("RSA keys shorter than 2048 bits are refused"));
                }
                true
            }
            _ => false,
        };
        if !fits {
            return Err(bad("its key type or curve does not match its algorithm"));
        }
        let decoding = DecodingKey::from_jwk(jwk).map_err(|e| bad(&e.to_string()))?;
        probe(&decoding, algorithm).map_err(|e| bad(&e))?;
        Ok(Self {
            kid,
            algorithm,
            decoding,
            public_jwk: Some(jwk.clone()),
        })
    }

    /// A verify-only key from a public key in PEM (`BEGIN PUBLIC KEY`, or for RSA also
    /// `BEGIN RSA PUBLIC KEY`), with the `kid` its issuer puts in tokens (for keys of a
    /// tenantkit issuer: the `kid` of its signing key, the key's RFC 7638 thumbprint).
    ///
    /// Private keys are refused: a verifier must not hold what signs. A key loaded this way
    /// verifies but is not republished by [`KeySet::jwks`] (it has no JWK).
    ///
    /// # Errors
    /// [`Error::Key`] for an empty `kid`, `HS256` (a shared secret, not a public key), a
    /// private key, or a PEM that is not a public key of `algorithm`.
    pub fn from_public_pem(
        algorithm: Algorithm,
        kid: impl Into<String>,
        pem: &[u8],
    ) -> Result<Self> {
        let kid = kid.into();
        if kid.is_empty() {
            return Err(Error::Key("a key needs a kid".into()));
        }
        let text = std::str::from_utf8(pem).map_err(|_| Error::Key("PEM is not text".into()))?;
        if text.contains("PRIVATE KEY") {
            return Err(Error::Key(
                "a private key where a public key was expected; verifiers take public keys only"
                    .into(),
            ));
        }
        let public_label = text.contains("-----BEGIN PUBLIC KEY-----")
            || (algorithm == Algorithm::RS256 && text.contains("-----BEGIN RSA PUBLIC KEY-----"));
        if !public_label {
            return Err(Error::Key(format!("not a {algorithm:?} public key PEM")));
        }
        let decoding = match algorithm {
            Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
            Algorithm::RS256 => DecodingKey::from_rsa_pem(pem),
            Algorithm::ES256 => DecodingKey::from_ec_pem(pem),
            Algorithm::HS256 => {
                return Err(Error::Key(
                    "HS256 keys are secrets, not public keys; use SigningKey::hmac".into(),
                ));
            }
        }
        .map_err(|e| Error::Key(format!("not a {algorithm:?} public key: {e}")))?;
        probe(&decoding, algorithm)
            .map_err(|e| Error::Key(format!("not a {algorithm:?} public key: {e}")))?;
        Ok(Self {
            kid,
            algorithm,
            decoding,
            public_jwk: None,
        })
    }
}

/// Checks that `decoding` is usable for `algorithm` by verifying a (wrong) signature with it:
/// a malformed key errors, a well-formed one just says "no".
fn probe(decoding: &DecodingKey, algorithm: Algorithm) -> std::result::Result<(), String> {
    // jsonwebtoken slices an Ed25519 key to 32 bytes without checking its length (a shorter
    // one panics, a longer one is silently truncated): check it first.
    if algorithm == Algorithm::EdDSA
        && decoding
            .try_get_as_bytes()
            .map_or(true, |bytes| bytes.len() != 32)
    {
        return Err("an Ed25519 public key is 32 bytes".into());
    }
    let signature = URL_SAFE_NO_PAD.encode([0u8; 64]);
    jsonwebtoken::crypto::verify(
        &signature,
        b"tenantkit key probe",
        decoding,
        algorithm.jwt(),
    )
    .map(drop)
    .map_err(|e| format!("unusable key: {e}"))
}

/// The members of a JWK that only private or secret keys have (RFC 7518 section 6).
const PRIVATE_JWK_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

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

/// The keys in use: at most one that signs, and every key that still verifies (the signing
/// key and older keys that have been rotated out but not retired yet). Immutable; rotation
/// makes a new set.
///
/// A *verify-only* set ([`KeySet::verify_only`], [`KeySet::from_jwks`]) holds public keys
/// only: a service that checks tokens another service issues. It is the same type as a
/// signing set so every layer ([`crate::JwtAuthLayer`], [`crate::StrictJwtAuthLayer`]) and
/// [`crate::AccessTokens`] work over it unchanged, with the same checks and the same cache;
/// [`crate::AccessTokens::issue`] over it answers [`Error::Key`].
#[derive(Debug, Clone)]
pub struct KeySet {
    signing: Option<Arc<SigningKey>>,
    verifying: BTreeMap<String, VerifyingKey>,
}

impl KeySet {
    /// A set whose only key is `signing`.
    pub fn new(signing: SigningKey) -> Self {
        let mut verifying = BTreeMap::new();
        verifying.insert(signing.kid().to_owned(), signing.verifying_key().clone());
        Self {
            signing: Some(Arc::new(signing)),
            verifying,
        }
    }

    /// A set that only verifies, with `keys`.
    ///
    /// # Errors
    /// [`Error::Key`] for no keys, or two keys with one `kid`.
    pub fn verify_only(keys: impl IntoIterator<Item = VerifyingKey>) -> Result<Self> {
        let mut verifying = BTreeMap::new();
        for key in keys {
            let kid = key.kid.clone();
            if verifying.insert(kid.clone(), key).is_some() {
                return Err(Error::Key(format!("two keys with kid {kid:?}")));
            }
        }
        if verifying.is_empty() {
            return Err(Error::Key("a key set needs at least one key".into()));
        }
        Ok(Self {
            signing: None,
            verifying,
        })
    }

    /// A verify-only set from a JWKS document (`{"keys": [...]}`, RFC 7517), such as the
    /// issuer's `/.well-known/jwks.json`. Every key must load ([`VerifyingKey::from_jwk`]):
    /// an unsupported or malformed key fails the whole document rather than being skipped,
    /// so a typo never silently drops a key.
    ///
    /// A key carrying private or secret members (`d`, `p`, `q`, `dp`, `dq`, `qi`, `oth`, `k`)
    /// refuses the document: a JWKS is public, one holding a private key is a leak to fix at
    /// its source, and a verifier must never be able to sign.
    ///
    /// # Errors
    /// [`Error::Key`] for malformed JSON, no `keys` array, no keys, a duplicate `kid`, a key
    /// with private members, or a key [`VerifyingKey::from_jwk`] refuses.
    pub fn from_jwks(json: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| Error::Key(format!("the JWKS is not JSON: {e}")))?;
        Self::from_jwks_value(&value)
    }

    /// [`KeySet::from_jwks`] from a parsed document.
    ///
    /// # Errors
    /// As [`KeySet::from_jwks`].
    pub fn from_jwks_value(jwks: &serde_json::Value) -> Result<Self> {
        let keys = jwks
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| Error::Key("the JWKS has no \"keys\" array".into()))?;
        let mut loaded = Vec::with_capacity(keys.len());
        for (index, key) in keys.iter().enumerate() {
            let object = key
                .as_object()
                .ok_or_else(|| Error::Key(format!("JWKS key {index} is not an object")))?;
            if let Some(member) = PRIVATE_JWK_MEMBERS
                .iter()
                .find(|member| object.contains_key(**member))
            {
                return Err(Error::Key(format!(
                    "JWKS key {index} has the private member {member:?}; a JWKS must hold \
                     public keys only"
                )));
            }
            let jwk: Jwk = serde_json::from_value(key.clone())
                .map_err(|e| Error::Key(format!("JWKS key {index} is malformed: {e}")))?;
            loaded.push(VerifyingKey::from_jwk(&jwk)?);
        }
        Self::verify_only(loaded)
    }

    /// Whether this set only verifies (it has no signing key).
    pub fn is_verify_only(&self) -> bool {
        self.signing.is_none()
    }

    /// Adds a verify-only key (an older key still honoured, or another of a verify-only set).
    pub fn with_verifier(mut self, key: VerifyingKey) -> Self {
        self.verifying.insert(key.kid.clone(), key);
        self
    }

    /// Rotation: `next` signs from now on; the previous signing key keeps verifying until
    /// [`KeySet::retire`]d, so tokens already issued stay valid until they expire.
    pub fn rotate(&self, next: SigningKey) -> Self {
        let mut set = self.clone().with_verifier(next.verifying_key().clone());
        set.signing = Some(Arc::new(next));
        set
    }

    /// Stops honouring a key. The signing key cannot be retired.
    ///
    /// # Errors
    /// [`Error::Key`] when `kid` is the signing key.
    pub fn retire(&self, kid: &str) -> Result<Self> {
        if self.signing.as_ref().is_some_and(|s| s.kid() == kid) {
            return Err(Error::Key(
                "the signing key cannot be retired; rotate first".into(),
            ));
        }
        let mut set = self.clone();
        set.verifying.remove(kid);
        Ok(set)
    }

    /// The key that signs new tokens; `None` for a verify-only set.
    pub fn signing(&self) -> Option<&SigningKey> {
        self.signing.as_deref()
    }

    /// The verifying key with this `kid`, compared exactly (never used as a path or query).
    pub fn verifier(&self, kid: &str) -> Option<&VerifyingKey> {
        self.verifying.get(kid)
    }

    /// Every key that verifies.
    pub fn verifiers(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.verifying.values()
    }

    /// `{"keys": [...]}` with the public keys only; HMAC keys are never listed (nor keys
    /// loaded from a PEM, which have no JWK).
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<&Jwk> = self
            .verifying
            .values()
            .filter_map(VerifyingKey::public_jwk)
            .collect();
        serde_json::json!({ "keys": keys })
    }
}
