//! The [`Keyring`]: sealing and opening secrets in the `v1.<kid>.<base64url>` format, and
//! key rotation.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::XNonce;
use chacha20poly1305::aead::AeadInOut as _;
use rand_core::{OsRng, RngCore as _};
use zeroize::Zeroizing;

use super::key::{Secret, SecretKey, valid_kid};
use super::{AAD_DOMAIN, NONCE_LEN, SecretError, TAG_LEN, VERSION};

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
