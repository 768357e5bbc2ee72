//! Keys and what they protect: [`SecretKey`] (a server key with its id, loaded from bytes or
//! a key file), [`write_key_file`], and the decrypted [`Secret`].

use std::fmt;
use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use chacha20poly1305::{KeyInit as _, XChaCha20Poly1305};
use rand_core::{OsRng, RngCore as _};
use zeroize::Zeroizing;

use super::{MAX_KID_LEN, SECRET_KEY_LEN, SecretError};

/// A decrypted secret. Its `Debug` never shows it, it has no `Display`, and its bytes are
/// zeroed when it is dropped.
#[derive(Clone, Default)]
pub struct Secret(pub(super) Zeroizing<Vec<u8>>);

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
    pub(super) id: String,
    pub(super) cipher: XChaCha20Poly1305,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

pub(super) fn valid_kid(kid: &str) -> bool {
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
