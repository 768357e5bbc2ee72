//! The object store trait and what it signs.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use time::{Duration, OffsetDateTime};

use crate::{ObjectKey, Result, Sha256, UploadIntent};

/// A boxed, sendable future (the trait is object safe: servers hold `Arc<dyn ObjectStore>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How the client sends the bytes: `"PUT"` or `"POST"` in JSON (any other value is a
/// deserialization error naming the field, answered as a validation problem by
/// `tenantkit_core::axum::ApiJson`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum UploadMethod {
    /// One `PUT` of the raw bytes with exactly the signed headers.
    #[serde(rename = "PUT")]
    Put,
    /// A browser `multipart/form-data` form: the signed fields, then `file`.
    #[serde(rename = "POST")]
    Post,
}

impl<'de> serde::Deserialize<'de> for UploadMethod {
    /// Exactly the string `"PUT"` or `"POST"` (not serde's `{"PUT": null}` form of a unit
    /// variant, nor another spelling).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Method;
        impl serde::de::Visitor<'_> for Method {
            type Value = UploadMethod;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"PUT\" or \"POST\"")
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<UploadMethod, E> {
                match value {
                    "PUT" => Ok(UploadMethod::Put),
                    "POST" => Ok(UploadMethod::Post),
                    other => Err(E::unknown_variant(other, &["PUT", "POST"])),
                }
            }
        }
        deserializer.deserialize_str(Method)
    }
}

/// Signed instructions for one upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignedUpload {
    /// `PUT` or `POST`.
    pub method: UploadMethod,
    /// Where to send it.
    pub url: String,
    /// The headers to send exactly (PUT).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The form fields to send, before the file (POST), in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<(String, String)>,
    /// When the signature stops working.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// A signed, expiring download URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedDownload {
    /// The URL.
    pub url: String,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
}

/// What the store knows about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Its size in bytes.
    pub size: u64,
    /// The content type it was stored with.
    pub content_type: Option<String>,
    /// Its SHA-256 when the store recorded one (S3's checksum, the local store's own).
    pub sha256: Option<Sha256>,
}

/// An entry of [`ObjectStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object's key.
    pub key: ObjectKey,
    /// When it was last written.
    pub modified: OffsetDateTime,
}

/// An object store that clients upload to and download from directly, through URLs this
/// trait signs. Implementations never take a path or key from the client: every method gets
/// an [`ObjectKey`].
pub trait ObjectStore: fmt::Debug + Send + Sync + 'static {
    /// The upload methods this store can sign.
    fn methods(&self) -> &'static [UploadMethod];

    /// Signs an upload of exactly `intent` (size, type, checksum) to `key`, valid for
    /// `expires_in`, create-only (a second upload to the same key is refused).
    ///
    /// # Errors
    /// [`crate::Error::Config`] for a method the store does not support.
    fn sign_upload<'a>(
        &'a self,
        key: &'a ObjectKey,
        intent: &'a UploadIntent,
        method: UploadMethod,
        now: OffsetDateTime,
        expires_in: Duration,
    ) -> BoxFuture<'a, Result<SignedUpload>>;

    /// Signs a download of `key`, served as an attachment named `filename` with
    /// `content_type`.
    ///
    /// # Errors
    /// Signing failures.
    fn sign_download<'a>(
        &'a self,
        key: &'a ObjectKey,
        filename: &'a str,
        content_type: &'a str,
        now: OffsetDateTime,
        expires_in: Duration,
    ) -> BoxFuture<'a, Result<SignedDownload>>;

    /// The object's metadata; `None` when there is none.
    fn head<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<Option<ObjectMeta>>>;

    /// Up to `len` leading bytes of the object (for [`crate::sniff`]).
    fn read_prefix<'a>(&'a self, key: &'a ObjectKey, len: usize) -> BoxFuture<'a, Result<Vec<u8>>>;

    /// The SHA-256 of the whole object, streamed (for stores whose [`ObjectStore::head`]
    /// gives none); `None` when the object is missing.
    fn digest<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<Option<Sha256>>>;

    /// Feeds the whole object to `visit`, chunk by chunk and in order, with bounded memory
    /// (for the SHA-256 and [`crate::sniff::Scanner`] in one pass); `false` when the object
    /// is missing.
    fn read_all<'a>(
        &'a self,
        key: &'a ObjectKey,
        visit: &'a mut (dyn FnMut(&[u8]) + Send),
    ) -> BoxFuture<'a, Result<bool>>;

    /// Pins the uploaded object at `key` before it is verified, so that the bytes verified
    /// are exactly the bytes downloads will return: answers the key that holds them from now
    /// on, which no signed upload can change any more, or `None` when nothing is at `key`.
    ///
    /// A store whose uploads are create-only and final (the local store: a hard link that
    /// fails when the target exists) answers `key` itself. A store where a signed upload can
    /// replace the object while its signature lasts (S3: a POST policy cannot say "create
    /// only", and an S3-compatible server may ignore a PUT's `If-None-Match`) copies it,
    /// server-side, to `to` (a key the server chose and never signed an upload for) and
    /// answers `to`. The caller deletes `to` when it does not keep it.
    fn pin<'a>(
        &'a self,
        key: &'a ObjectKey,
        to: &'a ObjectKey,
    ) -> BoxFuture<'a, Result<Option<ObjectKey>>>;

    /// Deletes the object; deleting a missing one succeeds.
    fn delete<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<()>>;

    /// Up to `limit` objects after `after` (in key order), for the sweeper.
    fn list<'a>(
        &'a self,
        after: Option<&'a ObjectKey>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<ObjectInfo>>>;
}

#[cfg(test)]
mod tests {
    use super::UploadMethod;

    #[test]
    fn upload_methods_are_exactly_put_and_post() {
        for (json, method) in [
            ("\"PUT\"", UploadMethod::Put),
            ("\"POST\"", UploadMethod::Post),
        ] {
            assert_eq!(
                serde_json::from_str::<UploadMethod>(json).expect(json),
                method
            );
            assert_eq!(serde_json::to_string(&method).expect("json"), json);
        }
        for json in ["\"put\"", "\"GET\"", "\"\"", "5", "null", "{\"PUT\":null}"] {
            assert!(
                serde_json::from_str::<UploadMethod>(json).is_err(),
                "{json}"
            );
        }
    }
}
