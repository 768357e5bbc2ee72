//! The local backend: objects under a folder, uploaded and downloaded through HMAC-signed,
//! expiring URLs that [`LocalStorageService`] serves.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use time::{Duration, OffsetDateTime};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::store::{BoxFuture, ObjectInfo, ObjectMeta, ObjectStore, SignedDownload, SignedUpload};
use crate::{Error, ObjectId, ObjectKey, Result, Sha256, UploadIntent, UploadMethod};

mod serve;

pub use serve::{LocalBody, LocalStorageService, TransferLimits};

/// The longest token a URL of this store may carry; longer ones are refused unread.
pub const MAX_LOCAL_TOKEN_BYTES: usize = 4096;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const CONTEXT: &[u8] = b"tenantkit-storage/local/v1:";

/// Objects under `<root>/objects/<tenant>/<object>` (with a `.meta` beside each), temporary
/// files under `<root>/tmp`. Paths are built only from an [`ObjectKey`]'s ids.
#[derive(Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
    /// How slowly an upload body may arrive before it is refused.
    transfer: TransferLimits,
}

struct Inner {
    root: PathBuf,
    base_url: String,
    key: Hmac<sha2::Sha256>,
    /// The object keys of the uploads being received now (at most one per key).
    receiving: serve::Receiving,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("root", &self.inner.root)
            .field("base_url", &self.inner.base_url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// `put` or `get`.
    op: String,
    key: String,
    exp: i64,
    #[serde(rename = "type")]
    content_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    content_type: String,
    size: u64,
    sha256: String,
}

impl LocalStore {
    /// A store rooted at `root` (created if missing, mode 0700 on Unix) whose URLs start with
    /// `base_url` (where [`LocalStorageService`] is mounted, e.g.
    /// `https://api.example/v1/storage`), signed with `secret` (32 bytes or more).
    ///
    /// # Errors
    /// [`Error::Config`] for a short secret or a root that cannot be created.
    pub fn new(root: impl Into<PathBuf>, base_url: &str, secret: &[u8]) -> Result<Self> {
        if secret.len() < 32 {
            return Err(Error::Config(
                "the local storage secret must be at least 32 bytes".into(),
            ));
        }
        let root = root.into();
        for dir in [root.join("objects"), root.join("tmp")] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::Config(format!("cannot create {}: {e}", dir.display())))?;
        }
        // What a crash (or a kill) left behind mid-upload.
        serve::remove_stale_temp_files(&root.join("tmp"), serve::STALE_TEMP_AGE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::Config(format!("cannot restrict {}: {e}", root.display())))?;
        }
        let key = Hmac::<sha2::Sha256>::new_from_slice(secret)
            .map_err(|_| Error::Config("unusable local storage secret".into()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                base_url: base_url.trim_end_matches('/').to_owned(),
                key,
                receiving: serve::Receiving::default(),
            }),
            transfer: TransferLimits::default(),
        })
    }

    /// The tower service that answers this store's signed URLs.
    pub fn service(&self) -> LocalStorageService {
        LocalStorageService {
            store: self.clone(),
        }
    }

    fn sign(&self, claims: &Claims) -> Result<String> {
        let payload = serde_json::to_vec(claims).map_err(|e| Error::Store(e.to_string()))?;
        let payload = B64.encode(payload);
        let mut mac = self.inner.key.clone();
        mac.update(CONTEXT);
        mac.update(payload.as_bytes());
        let signature = B64.encode(mac.finalize().into_bytes());
        Ok(format!("{payload}.{signature}"))
    }

    fn verify(&self, token: &str, op: &str, now: OffsetDateTime) -> Result<Claims> {
        if token.len() > MAX_LOCAL_TOKEN_BYTES {
            return Err(Error::BadSignature);
        }
        let (payload, signature) = token.split_once('.').ok_or(Error::BadSignature)?;
        let signature = B64.decode(signature).map_err(|_| Error::BadSignature)?;
        let mut mac = self.inner.key.clone();
        mac.update(CONTEXT);
        mac.update(payload.as_bytes());
        // Constant time.
        mac.verify_slice(&signature)
            .map_err(|_| Error::BadSignature)?;
        let payload = B64.decode(payload).map_err(|_| Error::BadSignature)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| Error::BadSignature)?;
        if claims.op != op {
            return Err(Error::BadSignature);
        }
        if claims.exp <= now.unix_timestamp() {
            return Err(Error::Expired);
        }
        Ok(claims)
    }

    fn object_path(&self, key: &ObjectKey) -> PathBuf {
        // Only the ids, formatted by us: never a path segment from outside.
        self.inner
            .root
            .join("objects")
            .join(key.tenant().to_string())
            .join(key.object().to_string())
    }

    fn meta_path(&self, key: &ObjectKey) -> PathBuf {
        let mut path = self.object_path(key).into_os_string();
        path.push(".meta");
        PathBuf::from(path)
    }

    fn tmp_path(&self) -> PathBuf {
        self.inner
            .root
            .join("tmp")
            .join(format!("{}.part", ObjectId::new()))
    }
}

fn store_err(e: io::Error) -> Error {
    Error::Store(e.to_string())
}

async fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .await
        .map_err(store_err)?;
    file.write_all(bytes).await.map_err(store_err)?;
    file.sync_all().await.map_err(store_err)?;
    Ok(())
}

async fn sync_dir(dir: &Path) -> Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(|e| Error::Store(e.to_string()))?
        .map_err(store_err)
}

impl LocalStore {
    async fn digest_file(&self, key: &ObjectKey) -> Result<Option<Sha256>> {
        let mut hasher = sha2::Sha256::new();
        let found = self
            .read_file(key, &mut |chunk: &[u8]| hasher.update(chunk))
            .await?;
        Ok(found.then(|| Sha256(hasher.finalize().into())))
    }

    async fn read_file(
        &self,
        key: &ObjectKey,
        visit: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<bool> {
        let mut file = match tokio::fs::File::open(self.object_path(key)).await {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(store_err(e)),
        };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf).await.map_err(store_err)?;
            if n == 0 {
                return Ok(true);
            }
            visit(&buf[..n]);
        }
    }

    fn sign_put(
        &self,
        key: &ObjectKey,
        intent: &UploadIntent,
        method: UploadMethod,
        now: OffsetDateTime,
        expires_in: Duration,
    ) -> Result<SignedUpload> {
        if method != UploadMethod::Put {
            return Err(Error::Config(
                "the local store signs PUT uploads only".into(),
            ));
        }
        let expires_at = now + expires_in;
        let token = self.sign(&Claims {
            op: "put".into(),
            key: key.as_str().to_owned(),
            exp: expires_at.unix_timestamp(),
            content_type: intent.content_type.clone(),
            size: Some(intent.size),
            sha256: Some(intent.sha256.to_hex()),
            name: None,
        })?;
        let mut headers = BTreeMap::new();
        headers.insert("content-type".to_owned(), intent.content_type.clone());
        headers.insert("content-length".to_owned(), intent.size.to_string());
        Ok(SignedUpload {
            method: UploadMethod::Put,
            url: format!("{}/upload/{token}", self.inner.base_url),
            headers,
            fields: Vec::new(),
            expires_at,
        })
    }

    fn sign_get(
        &self,
        key: &ObjectKey,
        filename: &str,
        content_type: &str,
        now: OffsetDateTime,
        expires_in: Duration,
    ) -> Result<SignedDownload> {
        let expires_at = now + expires_in;
        let token = self.sign(&Claims {
            op: "get".into(),
            key: key.as_str().to_owned(),
            exp: expires_at.unix_timestamp(),
            content_type: content_type.to_owned(),
            size: None,
            sha256: None,
            name: Some(filename.to_owned()),
        })?;
        Ok(SignedDownload {
            url: format!("{}/download/{token}", self.inner.base_url),
            expires_at,
        })
    }
}

impl ObjectStore for LocalStore {
    fn methods(&self) -> &'static [UploadMethod] {
        &[UploadMethod::Put]
    }

    fn sign_upload<'a>(
        &'a self,
        key: &'a ObjectKey,
        intent: &'a UploadIntent,
        method: UploadMethod,
        now: OffsetDateTime,
        expires_in: Duration,
    ) -> BoxFuture<'a, Result<SignedUpload>> {
        Box::pin(std::future::ready(
            self.sign_put(key, intent, method, now, expires_in),
        ))
    }

    fn sign_download<'a>(
        &'a self,
        key: &'a ObjectKey,
        filename: &'a str,
        content_type: &'a str,
        now: OffsetDateTime,
        expires_in: Duration,
    ) -> BoxFuture<'a, Result<SignedDownload>> {
        Box::pin(std::future::ready(self.sign_get(
            key,
            filename,
            content_type,
            now,
            expires_in,
        )))
    }

    fn head<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<Option<ObjectMeta>>> {
        Box::pin(async move {
            let data = match tokio::fs::metadata(self.object_path(key)).await {
                Ok(data) => data,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(store_err(e)),
            };
            match tokio::fs::read(self.meta_path(key)).await {
                Ok(bytes) => {
                    let meta: Meta =
                        serde_json::from_slice(&bytes).map_err(|e| Error::Store(e.to_string()))?;
                    Ok(Some(ObjectMeta {
                        size: data.len(),
                        content_type: Some(meta.content_type),
                        sha256: Sha256::from_hex(&meta.sha256).ok(),
                    }))
                }
                // A crash between the link and the metadata's rename: measure the object.
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Some(ObjectMeta {
                    size: data.len(),
                    content_type: None,
                    sha256: self.digest_file(key).await?,
                })),
                Err(e) => Err(store_err(e)),
            }
        })
    }

    fn digest<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<Option<Sha256>>> {
        Box::pin(self.digest_file(key))
    }

    fn read_prefix<'a>(&'a self, key: &'a ObjectKey, len: usize) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move {
            let file = match tokio::fs::File::open(self.object_path(key)).await {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(store_err(e)),
            };
            let mut out = Vec::with_capacity(len);
            file.take(len as u64)
                .read_to_end(&mut out)
                .await
                .map_err(store_err)?;
            Ok(out)
        })
    }

    fn read_all<'a>(
        &'a self,
        key: &'a ObjectKey,
        visit: &'a mut (dyn FnMut(&[u8]) + Send),
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.read_file(key, visit))
    }

    fn pin<'a>(
        &'a self,
        key: &'a ObjectKey,
        _to: &'a ObjectKey,
    ) -> BoxFuture<'a, Result<Option<ObjectKey>>> {
        // Uploads here are already final: the receive loop commits with a hard link that
        // fails when the target exists, so the bytes at `key` can never change.
        Box::pin(async move {
            match tokio::fs::metadata(self.object_path(key)).await {
                Ok(_) => Ok(Some(key.clone())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(store_err(e)),
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            for path in [self.object_path(key), self.meta_path(key)] {
                match tokio::fs::remove_file(&path).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(store_err(e)),
                }
            }
            Ok(())
        })
    }

    fn list<'a>(
        &'a self,
        after: Option<&'a ObjectKey>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<ObjectInfo>>> {
        Box::pin(async move {
            let root = self.inner.root.join("objects");
            let after = after.map(|k| k.as_str().to_owned());
            tokio::task::spawn_blocking(move || list_dir(&root, after.as_deref(), limit))
                .await
                .map_err(|e| Error::Store(e.to_string()))?
        })
    }
}

fn list_dir(root: &Path, after: Option<&str>, limit: usize) -> Result<Vec<ObjectInfo>> {
    let mut keys = Vec::new();
    for tenant in std::fs::read_dir(root).map_err(store_err)? {
        let tenant = tenant.map_err(store_err)?;
        let Some(tenant_name) = tenant.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Ok(entries) = std::fs::read_dir(tenant.path()) else {
            continue;
        };
        for entry in entries {
            let entry = entry.map_err(store_err)?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.ends_with(".meta") {
                continue;
            }
            let Ok(key) =
                ObjectKey::parse(&format!("{}{tenant_name}/{name}", ObjectKey::root_prefix()))
            else {
                continue;
            };
            if after.is_some_and(|after| key.as_str() <= after) {
                continue;
            }
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .map(OffsetDateTime::from)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
            keys.push(ObjectInfo { key, modified });
        }
    }
    keys.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
    keys.truncate(limit);
    Ok(keys)
}
