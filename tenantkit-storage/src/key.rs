//! Object keys and upload intents.

use std::fmt;

use tenantkit_core::TenantId;

use crate::{Error, Result};

tenantkit_core::define_id!(
    /// Identifies a stored object inside its tenant; made by the server, never by a client.
    ObjectId, "object id"
);

/// Where an object lives: `tenants/<tenant id>/<object id>`, built only from the tenant id
/// and a server-made [`ObjectId`], never from a file name or any other client text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    tenant: TenantId,
    object: ObjectId,
    text: String,
}

const PREFIX: &str = "tenants/";

impl ObjectKey {
    /// The key of `object` in `tenant`.
    pub fn new(tenant: TenantId, object: ObjectId) -> Self {
        Self {
            tenant,
            object,
            text: format!("{PREFIX}{tenant}/{object}"),
        }
    }

    /// The key written as text (as [`ObjectKey::as_str`] writes it); anything else,
    /// including another spelling of the same ids, is refused.
    ///
    /// # Errors
    /// [`Error::BadSignature`] for any other text.
    pub fn parse(text: &str) -> Result<Self> {
        let rest = text.strip_prefix(PREFIX).ok_or(Error::BadSignature)?;
        let (tenant, object) = rest.split_once('/').ok_or(Error::BadSignature)?;
        let tenant: TenantId = tenant.parse().map_err(|_| Error::BadSignature)?;
        let object: ObjectId = object.parse().map_err(|_| Error::BadSignature)?;
        let key = Self::new(tenant, object);
        if key.text == text {
            Ok(key)
        } else {
            Err(Error::BadSignature)
        }
    }

    /// The prefix every key of `tenant` starts with.
    pub fn tenant_prefix(tenant: TenantId) -> String {
        format!("{PREFIX}{tenant}/")
    }

    /// The prefix of every key.
    pub const fn root_prefix() -> &'static str {
        PREFIX
    }

    /// The owning tenant.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The object's id inside its tenant.
    pub fn object(&self) -> ObjectId {
        self.object
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// Parses 64 hex digits (either case).
    ///
    /// # Errors
    /// A validation error naming `sha256`.
    pub fn from_hex(text: &str) -> Result<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return Err(Error::invalid("sha256", "must be 64 hex digits"));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let hi = hex_value(pair[0]);
            let lo = hex_value(pair[1]);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out[i] = hi << 4 | lo,
                _ => return Err(Error::invalid("sha256", "must be 64 hex digits")),
            }
        }
        Ok(Self(out))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(sha2::Sha256::digest(bytes).into())
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Standard base64 (the form of S3's `x-amz-checksum-sha256`).
    pub fn to_base64(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// Parses standard base64 of 32 bytes.
    pub fn from_base64(text: &str) -> Option<Self> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?;
        Some(Self(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({})", self.to_hex())
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// What a client declares it will upload; every field is signed into the upload
/// instructions and checked again when the upload completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadIntent {
    /// The file name to offer on download (never part of the key).
    pub filename: String,
    /// The declared media type (lowercase `type/subtype`, no parameters).
    pub content_type: String,
    /// The exact size in bytes.
    pub size: u64,
    /// The SHA-256 of the bytes.
    pub sha256: Sha256,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_only_made_of_ids() {
        let key = ObjectKey::new(TenantId::new(), ObjectId::new());
        assert_eq!(ObjectKey::parse(key.as_str()).unwrap(), key);
        for bad in [
            "",
            "tenants/",
            "tenants/x/y",
            "tenants/../x",
            "/etc/passwd",
            &format!("{}/", key.as_str()),
            &format!("{}/../x", key.as_str()),
            &key.as_str().to_uppercase(),
            &key.as_str().replace("tenants/", "tenants//"),
        ] {
            assert!(ObjectKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sha256_round_trips() {
        let digest = Sha256::of(b"abc");
        assert_eq!(
            digest.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Sha256::from_hex(&digest.to_hex()).unwrap(), digest);
        assert_eq!(
            Sha256::from_hex(&digest.to_hex().to_uppercase()).unwrap(),
            digest
        );
        assert_eq!(Sha256::from_base64(&digest.to_base64()), Some(digest));
        assert!(Sha256::from_hex("zz").is_err());
        assert!(Sha256::from_hex(&"g".repeat(64)).is_err());
    }
}
