//! Secrets encrypted at rest (OIDC client secrets, TOTP seeds, API keys of other services):
//! XChaCha20-Poly1305 under a server key loaded from a file, with the key id stored in the
//! ciphertext, key rotation and associated data that binds a ciphertext to its row.
//!
//! - **Format**: `v1.<kid>.<base64url(nonce || ciphertext || tag)>`, one ASCII string fit for
//!   a `TEXT` column. The nonce is 24 random bytes, fresh for every encryption (XChaCha's
//!   nonce is long enough for random nonces to never repeat in practice).
//! - **Keys**: 32 random bytes in a file, raw or as base64 text, readable by the server only
//!   ([`write_key_file`] creates one with mode 0600, for development). Each key has an id
//!   (`kid`) chosen by the operator, stored in every ciphertext it sealed.
//! - **Rotation**: a [`Keyring`] encrypts with its current key and decrypts with any of its
//!   keys. [`Keyring::needs_rotation`] tells which ciphertexts were sealed by an older key;
//!   [`Keyring::rotate`] re-seals one under the current key, so stored secrets move over
//!   lazily (as they are read) or in a batch, and the old key is dropped once none is left.
//! - **Associated data**: every call names what the secret is for, for example
//!   `"sso_client_secret:<tenant_id>:<connection_id>"`. A ciphertext copied into another row
//!   (another tenant's connection) does not decrypt there. The version and key id are
//!   authenticated too.
//! - **In memory**: decrypted secrets are a [`Secret`], whose `Debug` prints `Secret(..)` and
//!   whose bytes are zeroed when it is dropped; keys are zeroed on drop as well.
//! - **Errors**: every malformed, truncated, tampered, moved or unknown-key ciphertext is a
//!   [`SecretError`], never a panic; none says more than which check failed.
//!
//! ```
//! use tenantkit_core::{Keyring, SecretKey};
//!
//! # fn main() -> Result<(), tenantkit_core::SecretError> {
//! // In a server: SecretKey::from_file("2026-01", "/etc/myapp/secret-2026-01.key")?
//! let old = SecretKey::from_bytes("2025-06", &[7u8; 32])?;
//! let ring = Keyring::new(old);
//! let row = "sso_client_secret:tenant-1:connection-9";
//! let stored = ring.encrypt(b"the client secret", row)?;
//! assert!(stored.starts_with("v1.2025-06."));
//! assert_eq!(ring.decrypt(&stored, row)?.expose(), b"the client secret");
//! // Moved to another row, it does not decrypt.
//! assert!(ring.decrypt(&stored, "sso_client_secret:tenant-2:connection-9").is_err());
//!
//! // Rotation: a new current key; the old one still decrypts.
//! let ring = Keyring::new(SecretKey::from_bytes("2026-01", &[9u8; 32])?)
//!     .with_old_key(SecretKey::from_bytes("2025-06", &[7u8; 32])?)?;
//! assert!(ring.needs_rotation(&stored));
//! let (secret, resealed) = ring.rotate(&stored, row)?;
//! let resealed = resealed.expect("sealed by the old key");
//! assert!(resealed.starts_with("v1.2026-01."));
//! assert_eq!(ring.decrypt(&resealed, row)?.expose(), secret.expose());
//! assert_eq!(format!("{secret:?}"), "Secret(..)");
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::AeadInOut as _;
use chacha20poly1305::{KeyInit as _, XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore as _};
use zeroize::Zeroizing;

/// The length of a key, in bytes.
pub const SECRET_KEY_LEN: usize = 32;
/// The version tag of the ciphertext format.
const VERSION: &str = "v1";
/// The length of a nonce, in bytes.
const NONCE_LEN: usize = 24;
/// The length of the authentication tag, in bytes.
const TAG_LEN: usize = 16;
/// The longest key id.
const MAX_KID_LEN: usize = 32;
/// Domain separation of the associated data: nothing else sealed with these keys can be
/// mistaken for a secret box.
const AAD_DOMAIN: &[u8] = b"tenantkit.secret_box.v1\0";

/// Why a key could not be loaded, or a secret not be sealed or opened.
///
/// Every variant is a server-side problem (a wrong key configured, a damaged or moved row);
/// mapped into [`crate::Error::Secret`], it answers 500 and is logged, never shown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The key file could not be read or written.
    #[error("secret key file {}: {reason}", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What went wrong (an I/O error's message).
        reason: String,
    },
    /// The key material is not 32 bytes (raw, or as base64 text), or does not look random.
    #[error("invalid secret key: {0}")]
    InvalidKey(&'static str),
    /// A key id is empty, longer than 32 characters, or has characters other than ASCII
    /// letters, digits, `-` and `_`.
    #[error("invalid key id: 1 to 32 of A-Z, a-z, 0-9, '-', '_'")]
    InvalidKeyId,
    /// Two keys of a keyring have the same id.
    #[error("duplicate key id {0:?} in the keyring")]
    DuplicateKeyId(String),
    /// The ciphertext is not `<version>.<kid>.<base64url>` with a nonce and a tag.
    #[error("malformed ciphertext")]
    Malformed,
    /// The ciphertext is of a version this code does not know.
    #[error("unsupported ciphertext version")]
    UnsupportedVersion,
    /// The ciphertext was sealed under a key that is not in the keyring (dropped too early,
    /// or another server's key).
    #[error("ciphertext sealed under unknown key {0:?}")]
    UnknownKey(String),
    /// Authentication failed: the ciphertext, nonce, key id or version was altered, the
    /// associated data differs (the ciphertext was moved to another row or purpose), or the
    /// key with this id is not the one that sealed it.
    #[error("secret could not be decrypted (tampered, moved, or another key)")]
    Decrypt,
    /// The plaintext is too long to seal.
    #[error("secret could not be encrypted")]
    Encrypt,
}

impl From<SecretError> for crate::Error {
    fn from(err: SecretError) -> Self {
        crate::Error::Secret(err)
    }
}

/// A decrypted secret. Its `Debug` never shows it, it has no `Display`, and its bytes are
/// zeroed when it is dropped.
#[derive(Clone, Default)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// A secret holding `bytes`.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(Zeroizing::new(bytes.into()))
    }

    /// The secret's bytes. Keep the borrow short; copy them nowhere that outlives it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as text.
    ///
    /// # Errors
    /// [`SecretError::Malformed`] when it is not UTF-8.
    pub fn expose_str(&self) -> Result<&str, SecretError> {
        std::str::from_utf8(&self.0).map_err(|_| SecretError::Malformed)
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Self::new(text.into_bytes())
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Self::new(text.as_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A server key with its id. Its `Debug` shows the id only; the key is zeroed on drop.
#[derive(Clone)]
pub struct SecretKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= MAX_KID_LEN
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl SecretKey {
    /// The key `bytes` (exactly 32), named `kid`.
    ///
    /// # Errors
    /// [`SecretError::InvalidKeyId`]; [`SecretError::InvalidKey`] unless `bytes` is 32 bytes,
    /// not all zero.
    pub fn from_bytes(kid: &str, bytes: &[u8]) -> Result<Self, SecretError> {
        if !valid_kid(kid) {
            return Err(SecretError::InvalidKeyId);
        }
        if bytes.len() != SECRET_KEY_LEN {
            return Err(SecretError::InvalidKey("a key is 32 bytes"));
        }
        if bytes.iter().all(|b| *b == 0) {
            return Err(SecretError::InvalidKey("the key is all zeros"));
        }
        let cipher = XChaCha20Poly1305::new_from_slice(bytes)
            .map_err(|_| SecretError::InvalidKey("a key is 32 bytes"))?;
        Ok(Self {
            id: kid.to_owned(),
            cipher,
        })
    }

    /// The key in the file at `path`, named `kid`: 32 raw bytes, or the base64 text of 32
    /// bytes (standard or URL-safe alphabet, padded or not, surrounding whitespace ignored).
    /// A 32-byte file of printable characters is refused: that is a password, not a key.
    ///
    /// # Errors
    /// [`SecretError::KeyFile`] when it cannot be read; [`SecretError::InvalidKey`] when it
    /// holds anything else; [`SecretError::InvalidKeyId`].
    pub fn from_file(kid: &str, path: impl AsRef<Path>) -> Result<Self, SecretError> {
        let path = path.as_ref();
        let contents = Zeroizing::new(std::fs::read(path).map_err(|e| SecretError::KeyFile {
            path: path.to_owned(),
            reason: e.to_string(),
        })?);
        Self::from_bytes(kid, &key_material(&contents)?)
    }

    /// The key in the file at `path` (as [`SecretKey::from_file`]), creating the file with a
    /// new random key first if there is none. For development and tests: in production,
    /// provision the key file like any other secret, so that a missing file is an error.
    ///
    /// # Errors
    /// As [`SecretKey::from_file`] and [`write_key_file`].
    pub fn load_or_create(kid: &str, path: impl AsRef<Path>) -> Result<Self, SecretError> {
        let path = path.as_ref();
        match write_key_file(path) {
            Ok(()) => {}
            Err(SecretError::KeyFile { .. }) if path.exists() => {}
            Err(e) => return Err(e),
        }
        Self::from_file(kid, path)
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The 32 key bytes in a key file's `contents`.
fn key_material(contents: &[u8]) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    if contents.len() == SECRET_KEY_LEN {
        // Random bytes are all printable with a chance of about 1e-14; text is a password.
        if contents.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            return Err(SecretError::InvalidKey(
                "32 printable characters: a password, not 32 random bytes (write base64)",
            ));
        }
        return Ok(Zeroizing::new(contents.to_vec()));
    }
    let text = std::str::from_utf8(contents)
        .map_err(|_| SecretError::InvalidKey("neither 32 raw bytes nor base64 text"))?
        .trim();
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        if let Ok(bytes) = engine.decode(text) {
            let bytes = Zeroizing::new(bytes);
            if bytes.len() != SECRET_KEY_LEN {
                return Err(SecretError::InvalidKey(
                    "the base64 text does not hold 32 bytes",
                ));
            }
            return Ok(bytes);
        }
    }
    Err(SecretError::InvalidKey(
        "neither 32 raw bytes nor base64 text",
    ))
}

/// Writes a new key file at `path`: 32 random bytes as base64 text, readable and writable by
/// its owner only (mode 0600 on Unix). Never overwrites: an existing file is an error.
/// Creates the parent directories.
///
/// # Errors
/// [`SecretError::KeyFile`].
pub fn write_key_file(path: impl AsRef<Path>) -> Result<(), SecretError> {
    let path = path.as_ref();
    let io_error = |e: std::io::Error| SecretError::KeyFile {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_error)?;
    }
    let mut key = Zeroizing::new([0u8; SECRET_KEY_LEN]);
    OsRng.fill_bytes(key.as_mut_slice());
    let mut text = Zeroizing::new(STANDARD.encode(key.as_slice()));
    text.push('\n');
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600); // Secret material: readable by the server's user only.
    }
    let mut file = options.open(path).map_err(io_error)?;
    file.write_all(text.as_bytes()).map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

/// The keys that seal and open secrets: one current key encrypts, every key decrypts what it
/// sealed. Cheap to clone.
#[derive(Clone)]
pub struct Keyring {
    /// The current key first, then the older ones.
    keys: std::sync::Arc<[SecretKey]>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current().id)
            .field(
                "old",
                &self.keys[1..].iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The three parts of a sealed secret.
struct Sealed<'a> {
    kid: &'a str,
    nonce: XNonce,
    /// Ciphertext and tag.
    body: Vec<u8>,
}

fn parse(sealed: &str) -> Result<Sealed<'_>, SecretError> {
    let mut parts = sealed.splitn(3, '.');
    let (Some(version), Some(kid), Some(payload)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SecretError::Malformed);
    };
    if version != VERSION {
        return Err(if version.starts_with('v') && version.len() <= 8 {
            SecretError::UnsupportedVersion
        } else {
            SecretError::Malformed
        });
    }
    if !valid_kid(kid) {
        return Err(SecretError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| SecretError::Malformed)?;
    if bytes.len() < NONCE_LEN + TAG_LEN {
        return Err(SecretError::Malformed);
    }
    let (nonce, body) = bytes.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SecretError::Malformed)?;
    Ok(Sealed {
        kid,
        nonce: XNonce::from(nonce),
        body: body.to_vec(),
    })
}

/// The associated data actually authenticated: the domain, the key id (so a ciphertext
/// cannot be relabelled) and the caller's context.
fn aad(kid: &str, context: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + kid.len() + 1 + context.len());
    aad.extend_from_slice(AAD_DOMAIN);
    aad.extend_from_slice(kid.as_bytes());
    aad.push(0);
    aad.extend_from_slice(context.as_bytes());
    aad
}

impl Keyring {
    /// A keyring whose current key is `current`.
    pub fn new(current: SecretKey) -> Self {
        Self {
            keys: vec![current].into(),
        }
    }

    /// Adds an older key, which decrypts what it sealed but never encrypts.
    ///
    /// # Errors
    /// [`SecretError::DuplicateKeyId`] when the ring has a key with this id.
    pub fn with_old_key(self, key: SecretKey) -> Result<Self, SecretError> {
        if self.keys.iter().any(|k| k.id == key.id) {
            return Err(SecretError::DuplicateKeyId(key.id.clone()));
        }
        let mut keys = self.keys.to_vec();
        keys.push(key);
        Ok(Self { keys: keys.into() })
    }

    fn current(&self) -> &SecretKey {
        &self.keys[0]
    }

    /// The id of the key that encrypts.
    pub fn current_key_id(&self) -> &str {
        &self.current().id
    }

    /// Seals `plaintext` under the current key for `context`, the row and purpose it belongs
    /// to (`"totp_seed:<user_id>"`, `"sso_client_secret:<tenant_id>:<connection_id>"`): only
    /// [`Keyring::decrypt`] with the same context opens it.
    ///
    /// # Errors
    /// [`SecretError::Encrypt`] when the plaintext is too long for the cipher.
    pub fn encrypt(&self, plaintext: &[u8], context: &str) -> Result<String, SecretError> {
        let key = self.current();
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let mut buffer = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
        buffer.extend_from_slice(plaintext);
        key.cipher
            .encrypt_in_place(&XNonce::from(nonce), &aad(&key.id, context), &mut *buffer)
            .map_err(|_| SecretError::Encrypt)?;
        let mut payload = Vec::with_capacity(NONCE_LEN + buffer.len());
        payload.extend_from_slice(&nonce);
        payload.extend_from_slice(&buffer);
        Ok(format!(
            "{VERSION}.{}.{}",
            key.id,
            URL_SAFE_NO_PAD.encode(payload)
        ))
    }

    /// Opens `sealed` (from [`Keyring::encrypt`]) for `context`.
    ///
    /// # Errors
    /// [`SecretError::Malformed`], [`SecretError::UnsupportedVersion`],
    /// [`SecretError::UnknownKey`], or [`SecretError::Decrypt`] when it was altered or belongs
    /// to another context.
    pub fn decrypt(&self, sealed: &str, context: &str) -> Result<Secret, SecretError> {
        let Sealed { kid, nonce, body } = parse(sealed)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == kid)
            .ok_or_else(|| SecretError::UnknownKey(kid.to_owned()))?;
        let mut buffer = Zeroizing::new(body);
        key.cipher
            .decrypt_in_place(&nonce, &aad(kid, context), &mut *buffer)
            .map_err(|_| SecretError::Decrypt)?;
        Ok(Secret(buffer))
    }

    /// Whether `sealed` was sealed under a key other than the current one, and should be
    /// re-sealed ([`Keyring::rotate`]). False for a ciphertext that cannot be parsed: there
    /// is nothing to rotate, and [`Keyring::decrypt`] reports why.
    pub fn needs_rotation(&self, sealed: &str) -> bool {
        parse(sealed).is_ok_and(|s| s.kid != self.current_key_id())
    }

    /// Opens `sealed` for `context` and, when it [needs rotation](Keyring::needs_rotation),
    /// seals it again under the current key: store the new ciphertext (in the same
    /// transaction that read the row) when one is returned.
    ///
    /// # Errors
    /// As [`Keyring::decrypt`] and [`Keyring::encrypt`].
    pub fn rotate(
        &self,
        sealed: &str,
        context: &str,
    ) -> Result<(Secret, Option<String>), SecretError> {
        let secret = self.decrypt(sealed, context)?;
        let resealed = if self.needs_rotation(sealed) {
            Some(self.encrypt(secret.expose(), context)?)
        } else {
            None
        };
        Ok((secret, resealed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROW: &str = "sso_client_secret:tenant-1:connection-1";

    fn key(kid: &str, byte: u8) -> SecretKey {
        SecretKey::from_bytes(kid, &[byte; SECRET_KEY_LEN]).expect("key")
    }

    fn ring() -> Keyring {
        Keyring::new(key("k1", 1))
    }

    /// `sealed` with its payload bytes changed by `edit`.
    fn edit_payload(sealed: &str, edit: impl FnOnce(&mut Vec<u8>)) -> String {
        let (head, payload) = sealed.rsplit_once('.').expect("format");
        let mut bytes = URL_SAFE_NO_PAD.decode(payload).expect("base64");
        edit(&mut bytes);
        format!("{head}.{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    fn temp_dir() -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tenantkit-secret-box-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn round_trip_with_fresh_nonces() {
        let ring = ring();
        let a = ring.encrypt(b"s3cret", ROW).expect("seal");
        let b = ring.encrypt(b"s3cret", ROW).expect("seal");
        assert_ne!(a, b, "a fresh nonce every time");
        assert!(a.starts_with("v1.k1."), "{a}");
        assert_eq!(ring.decrypt(&a, ROW).expect("open").expose(), b"s3cret");
        assert_eq!(
            ring.decrypt(&b, ROW)
                .expect("open")
                .expose_str()
                .expect("utf-8"),
            "s3cret"
        );
        let empty = ring.encrypt(b"", ROW).expect("seal");
        assert_eq!(ring.decrypt(&empty, ROW).expect("open").expose(), b"");
    }

    #[test]
    fn tampered_ciphertext_nonce_tag_kid_and_version_are_refused() {
        let ring = Keyring::new(key("k1", 1))
            .with_old_key(key("k2", 2))
            .expect("ring");
        let sealed = ring.encrypt(b"s3cret", ROW).expect("seal");
        let last = URL_SAFE_NO_PAD
            .decode(sealed.rsplit_once('.').expect("format").1)
            .expect("base64")
            .len()
            - 1;
        for (what, edited) in [
            ("nonce", edit_payload(&sealed, |b| b[0] ^= 1)),
            ("ciphertext", edit_payload(&sealed, |b| b[NONCE_LEN] ^= 1)),
            ("tag", edit_payload(&sealed, |b| b[last] ^= 0x80)),
        ] {
            assert!(
                matches!(ring.decrypt(&edited, ROW), Err(SecretError::Decrypt)),
                "{what}"
            );
        }
        // Relabelled to another key of the ring: that key did not seal it.
        let relabelled = sealed.replacen("v1.k1.", "v1.k2.", 1);
        assert!(matches!(
            ring.decrypt(&relabelled, ROW),
            Err(SecretError::Decrypt)
        ));
        let v2 = sealed.replacen("v1.", "v2.", 1);
        assert!(matches!(
            ring.decrypt(&v2, ROW),
            Err(SecretError::UnsupportedVersion)
        ));
        assert!(matches!(
            ring.decrypt(&sealed.replacen("v1.", "x1.", 1), ROW),
            Err(SecretError::Malformed)
        ));
    }

    #[test]
    fn malformed_and_truncated_input_is_an_error_never_a_panic() {
        let ring = ring();
        let sealed = ring.encrypt(b"s3cret", ROW).expect("seal");
        let mut inputs: Vec<String> = [
            "",
            ".",
            "..",
            "v1",
            "v1.k1",
            "v1.k1.",
            "v1..AAAA",
            "v1.k1.***",
            "v1.k.1.AAAA",
            "v1.k1.AAAA",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for cut in 0..sealed.len() {
            inputs.push(sealed[..cut].to_owned());
        }
        inputs.push(format!("v1.{}.AAAA", "k".repeat(40)));
        inputs.push(edit_payload(&sealed, |b| {
            b.truncate(NONCE_LEN + TAG_LEN - 1)
        }));
        for input in &inputs {
            assert!(ring.decrypt(input, ROW).is_err(), "{input:?}");
            let _ = ring.needs_rotation(input);
        }
    }

    #[test]
    fn another_context_is_refused() {
        let ring = ring();
        let sealed = ring.encrypt(b"s3cret", ROW).expect("seal");
        for other in [
            "sso_client_secret:tenant-2:connection-1",
            "sso_client_secret:tenant-1:connection-2",
            "totp_seed:tenant-1:connection-1",
            "",
        ] {
            assert!(
                matches!(ring.decrypt(&sealed, other), Err(SecretError::Decrypt)),
                "{other}"
            );
        }
    }

    #[test]
    fn rotation_old_keys_decrypt_the_current_key_encrypts() {
        let old_ring = Keyring::new(key("2025", 1));
        let old = old_ring.encrypt(b"s3cret", ROW).expect("seal");
        assert!(!old_ring.needs_rotation(&old));

        let ring = Keyring::new(key("2026", 2))
            .with_old_key(key("2025", 1))
            .expect("ring");
        assert_eq!(ring.current_key_id(), "2026");
        assert_eq!(
            ring.decrypt(&old, ROW).expect("old key").expose(),
            b"s3cret"
        );
        assert!(ring.needs_rotation(&old));
        let new = ring.encrypt(b"s3cret", ROW).expect("seal");
        assert!(new.starts_with("v1.2026."), "{new}");
        assert!(!ring.needs_rotation(&new));

        let (secret, resealed) = ring.rotate(&old, ROW).expect("rotate");
        assert_eq!(secret.expose(), b"s3cret");
        let resealed = resealed.expect("re-sealed");
        assert!(!ring.needs_rotation(&resealed));
        assert_eq!(
            ring.decrypt(&resealed, ROW).expect("open").expose(),
            b"s3cret"
        );
        let (_, again) = ring.rotate(&resealed, ROW).expect("rotate");
        assert!(again.is_none(), "current ciphertexts stay as they are");
        // The moved row does not rotate either.
        assert!(matches!(
            ring.rotate(&old, "another row"),
            Err(SecretError::Decrypt)
        ));
        assert!(matches!(
            Keyring::new(key("2026", 2)).with_old_key(key("2026", 3)),
            Err(SecretError::DuplicateKeyId(_))
        ));
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let sealed = Keyring::new(key("gone", 1))
            .encrypt(b"s3cret", ROW)
            .expect("seal");
        let ring = Keyring::new(key("k2", 1));
        assert!(matches!(
            ring.decrypt(&sealed, ROW),
            Err(SecretError::UnknownKey(kid)) if kid == "gone"
        ));
    }

    #[test]
    fn key_ids_and_key_bytes_are_checked() {
        for kid in ["", "a.b", "a b", "ключ", &"k".repeat(33)] {
            assert!(
                matches!(
                    SecretKey::from_bytes(kid, &[1; 32]),
                    Err(SecretError::InvalidKeyId)
                ),
                "{kid:?}"
            );
        }
        for bytes in [&[1u8; 31][..], &[1u8; 33][..], &[0u8; 32][..], &[][..]] {
            assert!(matches!(
                SecretKey::from_bytes("k", bytes),
                Err(SecretError::InvalidKey(_))
            ));
        }
    }

    #[test]
    fn key_files_raw_or_base64_of_32_bytes_only() {
        let dir = temp_dir();
        let raw: Vec<u8> = (0u8..32).map(|b| b.wrapping_mul(37) ^ 0x80).collect();
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            ("raw", raw.clone(), true),
            (
                "b64",
                format!("{}\n", STANDARD.encode(&raw)).into_bytes(),
                true,
            ),
            ("b64url", URL_SAFE_NO_PAD.encode(&raw).into_bytes(), true),
            ("short-raw", raw[..31].to_vec(), false),
            ("long-raw", [raw.clone(), vec![0x80]].concat(), false),
            ("short-b64", STANDARD.encode(&raw[..31]).into_bytes(), false),
            (
                "long-b64",
                STANDARD
                    .encode([raw.clone(), vec![1]].concat())
                    .into_bytes(),
                false,
            ),
            (
                "password",
                b"correct horse battery staple 123".to_vec(),
                false,
            ),
            ("garbage", vec![0xff; 40], false),
            ("empty", Vec::new(), false),
        ];
        let reference = SecretKey::from_bytes("k", &raw).expect("key");
        let sealed = Keyring::new(reference).encrypt(b"x", ROW).expect("seal");
        for (name, contents, ok) in cases {
            let path = dir.join(name);
            std::fs::write(&path, &contents).expect("write");
            match SecretKey::from_file("k", &path) {
                Ok(key) => {
                    assert!(ok, "{name} was accepted");
                    assert_eq!(
                        Keyring::new(key)
                            .decrypt(&sealed, ROW)
                            .expect(name)
                            .expose(),
                        b"x"
                    );
                }
                Err(err) => {
                    assert!(!ok, "{name}: {err}");
                    assert!(matches!(err, SecretError::InvalidKey(_)), "{name}: {err}");
                }
            }
        }
        assert!(matches!(
            SecretKey::from_file("k", dir.join("missing")),
            Err(SecretError::KeyFile { .. })
        ));
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_created_key_file_is_private_random_and_never_overwritten() {
        let dir = temp_dir();
        let path = dir.join("keys").join("secret.key");
        let first = SecretKey::load_or_create("dev", &path).expect("created");
        let contents = std::fs::read(&path).expect("read");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = SecretKey::load_or_create("dev", &path).expect("loaded");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            contents,
            "not overwritten"
        );
        assert!(matches!(
            write_key_file(&path),
            Err(SecretError::KeyFile { .. })
        ));
        let sealed = Keyring::new(first).encrypt(b"x", ROW).expect("seal");
        assert_eq!(
            Keyring::new(again)
                .decrypt(&sealed, ROW)
                .expect("open")
                .expose(),
            b"x"
        );
        let other = SecretKey::load_or_create("dev", dir.join("other.key")).expect("created");
        assert!(
            matches!(
                Keyring::new(other).decrypt(&sealed, ROW),
                Err(SecretError::Decrypt)
            ),
            "each new file holds a new random key"
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn debug_never_shows_a_secret_or_a_key() {
        let secret = Secret::from("hunter2-hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(..)");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(Secret(..))");
        let k1 = SecretKey::from_bytes("k1", &[0xab; 32]).expect("key");
        let ring = Keyring::new(k1.clone())
            .with_old_key(key("k0", 1))
            .expect("ring");
        for shown in [format!("{k1:?}"), format!("{ring:?}"), format!("{k1:#?}")] {
            assert!(
                !shown.contains("ab, ab") && !shown.contains("171"),
                "{shown}"
            );
            assert!(shown.contains("k1"), "{shown}");
        }
        let opened = ring
            .decrypt(&ring.encrypt(b"hunter2-hunter2", ROW).expect("seal"), ROW)
            .expect("open");
        assert!(!format!("{opened:?}").contains("hunter2"));
        let err = ring.decrypt("v1.k1.AAAA", ROW).expect_err("malformed");
        assert!(!format!("{err:?} {err}").contains("hunter2"));
    }

    #[test]
    fn errors_map_into_the_core_error_as_internal() {
        let err: crate::Error = SecretError::Decrypt.into();
        assert!(err.is_internal());
        let problem = crate::Problem::from(&err);
        assert_eq!(problem.status, 500);
    }
}
