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

mod key;
mod keyring;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use key::{Secret, SecretKey, write_key_file};
pub use keyring::Keyring;

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
