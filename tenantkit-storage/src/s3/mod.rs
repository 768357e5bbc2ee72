//! The S3 backend (any S3-compatible endpoint) over aws-sdk-s3: presigned PUT with the
//! content type, the exact length, the SHA-256 checksum and `If-None-Match: *` signed, and a
//! SigV4 browser POST policy (aws-sdk-s3 has no helper for it: [`post_policy`]).

mod post_policy;

use std::collections::BTreeMap;
use std::time::SystemTime;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::types::ChecksumMode;
use time::{Duration, OffsetDateTime};

use crate::store::{BoxFuture, ObjectInfo, ObjectMeta, ObjectStore, SignedDownload, SignedUpload};
use crate::{Error, ObjectKey, Result, Sha256, UploadIntent, UploadMethod};

/// How to reach the bucket.
#[derive(Clone)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// The region (`us-east-1` for most S3-compatible servers).
    pub region: String,
    /// A custom endpoint (MinIO, SeaweedFS, R2), e.g. `http://127.0.0.1:8333`; `None` for
    /// AWS. A custom endpoint is addressed path-style.
    pub endpoint: Option<String>,
    /// The access key id.
    pub access_key: String,
    /// The secret access key.
    pub secret_key: String,
    /// A session token, for temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    /// From the standard AWS variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, `AWS_REGION`) and the given bucket and endpoint.
    ///
    /// # Errors
    /// [`Error::Config`] when the credentials are missing.
    pub fn from_env(bucket: &str, endpoint: Option<&str>, region: Option<&str>) -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Ok(Self {
            bucket: bucket.to_owned(),
            region: region
                .map(str::to_owned)
                .or_else(|| var("AWS_REGION"))
                .or_else(|| var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".to_owned()),
            endpoint: endpoint.map(|e| e.trim_end_matches('/').to_owned()),
            access_key: var("AWS_ACCESS_KEY_ID")
                .ok_or_else(|| Error::Config("AWS_ACCESS_KEY_ID is not set".into()))?,
            secret_key: var("AWS_SECRET_ACCESS_KEY")
                .ok_or_else(|| Error::Config("AWS_SECRET_ACCESS_KEY is not set".into()))?,
            session_token: var("AWS_SESSION_TOKEN"),
        })
    }
}

/// An S3 bucket as an [`ObjectStore`].
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    config: std::sync::Arc<S3Config>,
}

impl S3Store {
    /// A store for `config`, with a rustls (ring) HTTPS client that also speaks plain HTTP to
    /// local endpoints.
    pub fn new(config: S3Config) -> Self {
        let credentials = Credentials::new(
            config.access_key.clone(),
            config.secret_key.clone(),
            config.session_token.clone(),
            None,
            "tenantkit",
        );
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            .http_client(http)
            // The checksum is a value the client must send, never one the SDK computes over
            // an empty presigned body.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint).force_path_style(true);
        }
        Self {
            client: Client::from_conf(builder.build()),
            config: std::sync::Arc::new(config),
        }
    }

    /// Creates the bucket when it does not exist (for development and tests; production
    /// buckets are made by their owner, with their own policies).
    ///
    /// # Errors
    /// [`Error::Store`] when the bucket can neither be created nor is already there.
    pub async fn ensure_bucket(&self) -> Result<()> {
        match self
            .client
            .create_bucket()
            .bucket(&self.config.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => {
                let service = err.into_service_error();
                if service.is_bucket_already_owned_by_you() || service.is_bucket_already_exists() {
                    Ok(())
                } else {
                    Err(sdk_err(service))
                }
            }
        }
    }

    fn presigning(now: OffsetDateTime, expires_in: Duration) -> Result<PresigningConfig> {
        let expires_in = std::time::Duration::try_from(expires_in)
            .map_err(|_| Error::Config("negative expiry".into()))?;
        PresigningConfig::builder()
            .start_time(SystemTime::from(now))
            .expires_in(expires_in)
            .build()
            .map_err(|e| Error::Config(format!("presigning: {e}")))
    }

    /// Where browser forms POST to.
    fn post_url(&self) -> String {
        match &self.config.endpoint {
            Some(endpoint) => format!("{endpoint}/{}", self.config.bucket),
            None => format!(
                "https://{}.s3.{}.amazonaws.com",
                self.config.bucket, self.config.region
            ),
        }
    }

    async fn sign_put(
        &self,
        key: &ObjectKey,
        intent: &UploadIntent,
        now: OffsetDateTime,
        expires_in: Duration,
    ) -> Result<SignedUpload> {
        let size = i64::try_from(intent.size).map_err(|_| Error::invalid("size", "too large"))?;
        let presigned = self
            .client
            .put_object()
            .bucket(&self.config.bucket)
            .key(key.as_str())
            .content_type(&intent.content_type)
            .content_length(size)
            .checksum_sha256(intent.sha256.to_base64())
            .if_none_match("*")
            .presigned(Self::presigning(now, expires_in)?)
            .await
            .map_err(|e| Error::Store(e.to_string()))?;
        let headers: BTreeMap<String, String> = presigned
            .headers()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
            .collect();
        Ok(SignedUpload {
            method: UploadMethod::Put,
            url: presigned.uri().to_owned(),
            headers,
            fields: Vec::new(),
            expires_at: now + expires_in,
        })
    }

    fn sign_post(
        &self,
        key: &ObjectKey,
        intent: &UploadIntent,
        now: OffsetDateTime,
        expires_in: Duration,
    ) -> SignedUpload {
        let policy = post_policy::PostPolicy {
            access_key: &self.config.access_key,
            secret_key: &self.config.secret_key,
            session_token: self.config.session_token.as_deref(),
            region: &self.config.region,
            bucket: &self.config.bucket,
            key: key.as_str(),
            content_type: &intent.content_type,
            // The exact size: the policy admits nothing else. (The checksum cannot be a POST
            // policy condition; completion checks the SHA-256 of what was stored.)
            min_size: intent.size,
            max_size: intent.size,
            now,
            expires_in,
        };
        SignedUpload {
            method: UploadMethod::Post,
            url: self.post_url(),
            headers: BTreeMap::new(),
            fields: policy.fields(),
            expires_at: now + expires_in,
        }
    }
}

fn sdk_err<E: std::fmt::Display>(e: E) -> Error {
    Error::Store(e.to_string())
}

impl ObjectStore for S3Store {
    fn methods(&self) -> &'static [UploadMethod] {
        &[UploadMethod::Put, UploadMethod::Post]
    }

    fn sign_upload<'a>(
        &'a self,
        key: &'a ObjectKey,
        intent: &'a UploadIntent,
        method: UploadMethod,
        now: OffsetDateTime,
        expires_in: Duration,
    ) -> BoxFuture<'a, Result<SignedUpload>> {
        Box::pin(async move {
            match method {
                UploadMethod::Put => self.sign_put(key, intent, now, expires_in).await,
                UploadMethod::Post => Ok(self.sign_post(key, intent, now, expires_in)),
            }
        })
    }

    fn sign_download<'a>(
        &'a self,
        key: &'a ObjectKey,
        filename: &'a str,
        content_type: &'a str,
        now: OffsetDateTime,
        expires_in: Duration,
    ) -> BoxFuture<'a, Result<SignedDownload>> {
        Box::pin(async move {
            let disposition = crate::disposition::content_disposition_text(filename);
            let presigned = self
                .client
                .get_object()
                .bucket(&self.config.bucket)
                .key(key.as_str())
                .response_content_disposition(disposition)
                .response_content_type(content_type)
                // S3 has no override for `X-Content-Type-Options`: the bucket must be served
                // from its own domain (README), so nothing it serves runs on the API's origin.
                .response_cache_control("private, no-store")
                .presigned(Self::presigning(now, expires_in)?)
                .await
                .map_err(sdk_err)?;
            Ok(SignedDownload {
                url: presigned.uri().to_owned(),
                expires_at: now + expires_in,
            })
        })
    }

    fn head<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<Option<ObjectMeta>>> {
        Box::pin(async move {
            let result = self
                .client
                .head_object()
                .bucket(&self.config.bucket)
                .key(key.as_str())
                .checksum_mode(ChecksumMode::Enabled)
                .send()
                .await;
            match result {
                Ok(head) => Ok(Some(ObjectMeta {
                    size: head
                        .content_length()
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(0),
                    content_type: head.content_type().map(str::to_owned),
                    sha256: head.checksum_sha256().and_then(Sha256::from_base64),
                })),
                Err(err) => {
                    let service = err.into_service_error();
                    if service.is_not_found() {
                        Ok(None)
                    } else {
                        Err(sdk_err(service))
                    }
                }
            }
        })
    }

    fn digest<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<Option<Sha256>>> {
        Box::pin(async move {
            use sha2::Digest as _;
            let mut hasher = sha2::Sha256::new();
            let found = self
                .read_all(key, &mut |chunk| hasher.update(chunk))
                .await?;
            Ok(found.then(|| Sha256(hasher.finalize().into())))
        })
    }

    fn read_prefix<'a>(&'a self, key: &'a ObjectKey, len: usize) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move {
            if len == 0 {
                return Ok(Vec::new());
            }
            let object = self
                .client
                .get_object()
                .bucket(&self.config.bucket)
                .key(key.as_str())
                .range(format!("bytes=0-{}", len - 1))
                .send()
                .await
                .map_err(|e| sdk_err(e.into_service_error()))?;
            let bytes = object.body.collect().await.map_err(sdk_err)?.into_bytes();
            let mut bytes = bytes.to_vec();
            bytes.truncate(len);
            Ok(bytes)
        })
    }

    fn read_all<'a>(
        &'a self,
        key: &'a ObjectKey,
        visit: &'a mut (dyn FnMut(&[u8]) + Send),
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let object = match self
                .client
                .get_object()
                .bucket(&self.config.bucket)
                .key(key.as_str())
                .send()
                .await
            {
                Ok(object) => object,
                Err(err) => {
                    let service = err.into_service_error();
                    return if service.is_no_such_key() {
                        Ok(false)
                    } else {
                        Err(sdk_err(service))
                    };
                }
            };
            let mut body = object.body;
            while let Some(chunk) = body.try_next().await.map_err(sdk_err)? {
                visit(&chunk);
            }
            Ok(true)
        })
    }

    fn pin<'a>(
        &'a self,
        key: &'a ObjectKey,
        to: &'a ObjectKey,
    ) -> BoxFuture<'a, Result<Option<ObjectKey>>> {
        Box::pin(async move {
            use aws_sdk_s3::error::ProvideErrorMetadata as _;
            // A POST policy cannot say "create only": the same form may be posted again,
            // with other bytes of the same length, until it expires. The copy lands on a key
            // no upload was ever signed for, so nothing a client holds can change it; the
            // caller verifies the copy, and downloads are signed for it only.
            let copied = self
                .client
                .copy_object()
                .bucket(&self.config.bucket)
                .copy_source(format!("{}/{}", self.config.bucket, key.as_str()))
                .key(to.as_str())
                .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
                .send()
                .await;
            match copied {
                Ok(_) => Ok(Some(to.clone())),
                Err(err) => {
                    let missing = err
                        .raw_response()
                        .is_some_and(|raw| raw.status().as_u16() == 404);
                    let service = err.into_service_error();
                    if missing || service.code() == Some("NoSuchKey") {
                        Ok(None)
                    } else {
                        Err(sdk_err(service))
                    }
                }
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.client
                .delete_object()
                .bucket(&self.config.bucket)
                .key(key.as_str())
                .send()
                .await
                .map_err(|e| sdk_err(e.into_service_error()))?;
            Ok(())
        })
    }

    fn list<'a>(
        &'a self,
        after: Option<&'a ObjectKey>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<ObjectInfo>>> {
        Box::pin(async move {
            let mut request = self
                .client
                .list_objects_v2()
                .bucket(&self.config.bucket)
                .prefix(ObjectKey::root_prefix())
                .max_keys(i32::try_from(limit.min(1000)).unwrap_or(1000));
            if let Some(after) = after {
                request = request.start_after(after.as_str());
            }
            let listed = request
                .send()
                .await
                .map_err(|e| sdk_err(e.into_service_error()))?;
            Ok(listed
                .contents()
                .iter()
                .filter_map(|object| {
                    // Keys this crate did not make are not its to sweep.
                    let key = ObjectKey::parse(object.key()?).ok()?;
                    let modified = object
                        .last_modified()
                        .and_then(|t| OffsetDateTime::from_unix_timestamp(t.secs()).ok())
                        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
                    Some(ObjectInfo { key, modified })
                })
                .collect())
        })
    }
}
