//! The HTTP side of the local backend: receiving signed uploads, serving signed downloads,
//! and the tower service that answers both.

use std::convert::Infallible;
use std::io;
use std::path::{Path, PathBuf};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::TryStreamExt as _;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use sha2::Digest as _;
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt as _;

use crate::disposition::content_disposition;
use crate::store::BoxFuture;
use crate::{Error, ObjectKey, Result, Sha256};

use super::{LocalStore, Meta, store_err, sync_dir, write_synced};

impl LocalStore {
    /// Receives one signed upload: checks the token, the headers and, while streaming, the
    /// size and SHA-256; commits with fsync and a create-only link. Nothing is kept when any
    /// check fails.
    ///
    /// # Errors
    /// [`Error::BadSignature`], [`Error::Expired`], [`Error::Refused`], [`Error::TooLarge`],
    /// [`Error::AlreadyExists`], [`Error::Store`].
    pub async fn receive<B>(
        &self,
        token: &str,
        headers: &HeaderMap,
        body: B,
        now: OffsetDateTime,
    ) -> Result<()>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: std::fmt::Display + Send,
    {
        let claims = self.verify(token, "put", now)?;
        let key = ObjectKey::parse(&claims.key)?;
        let size = claims.size.ok_or(Error::BadSignature)?;
        let expected = Sha256::from_hex(claims.sha256.as_deref().unwrap_or_default())
            .map_err(|_| Error::BadSignature)?;
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .ok_or(Error::Refused("Content-Type is missing"))?;
        if !content_type
            .trim()
            .eq_ignore_ascii_case(&claims.content_type)
        {
            return Err(Error::Refused("Content-Type differs from the signed type"));
        }
        if let Some(length) = headers.get(header::CONTENT_LENGTH) {
            let length: u64 = length
                .to_str()
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or(Error::Refused("Content-Length is malformed"))?;
            if length > size {
                return Err(Error::TooLarge);
            }
            if length != size {
                return Err(Error::Refused(
                    "Content-Length differs from the signed size",
                ));
            }
        }
        let target = self.object_path(&key);
        if tokio::fs::try_exists(&target).await.unwrap_or(false) {
            return Err(Error::AlreadyExists);
        }
        let tmp = self.tmp_path();
        let result = self
            .write_checked(&tmp, &key, body, size, expected, &claims.content_type)
            .await;
        // The temporary file goes in every case (after a success the link keeps the data).
        let _ = tokio::fs::remove_file(&tmp).await;
        let mut meta_tmp = tmp.into_os_string();
        meta_tmp.push(".meta");
        let _ = tokio::fs::remove_file(PathBuf::from(meta_tmp)).await;
        result
    }

    async fn write_checked<B>(
        &self,
        tmp: &Path,
        key: &ObjectKey,
        body: B,
        size: u64,
        expected: Sha256,
        content_type: &str,
    ) -> Result<()>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: std::fmt::Display + Send,
    {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .await
            .map_err(store_err)?;
        let mut hasher = sha2::Sha256::new();
        let mut written: u64 = 0;
        let mut body = std::pin::pin!(body);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| Error::Refused("the body could not be read"))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            written = written.saturating_add(data.len() as u64);
            if written > size {
                return Err(Error::TooLarge);
            }
            hasher.update(&data);
            file.write_all(&data).await.map_err(store_err)?;
        }
        if written != size {
            return Err(Error::Refused("the body is shorter than the signed size"));
        }
        if Sha256(hasher.finalize().into()) != expected {
            return Err(Error::Refused(
                "the body's sha256 differs from the signed one",
            ));
        }
        file.flush().await.map_err(store_err)?;
        file.sync_all().await.map_err(store_err)?;
        drop(file);

        let meta = Meta {
            content_type: content_type.to_owned(),
            size,
            sha256: expected.to_hex(),
        };
        let mut meta_tmp = tmp.as_os_str().to_owned();
        meta_tmp.push(".meta");
        let meta_tmp = PathBuf::from(meta_tmp);
        let meta_json = serde_json::to_vec(&meta).map_err(|e| Error::Store(e.to_string()))?;
        write_synced(&meta_tmp, &meta_json).await?;

        let target = self.object_path(key);
        let dir = target.parent().map(Path::to_path_buf).unwrap_or_default();
        tokio::fs::create_dir_all(&dir).await.map_err(store_err)?;
        // The commit point: a hard link fails when the target exists, so two uploads to the
        // same key can never both win, and a reader never sees a partial file.
        match tokio::fs::hard_link(tmp, &target).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists);
            }
            Err(e) => return Err(store_err(e)),
        }
        tokio::fs::rename(&meta_tmp, self.meta_path(key))
            .await
            .map_err(store_err)?;
        sync_dir(&dir).await?;
        Ok(())
    }

    async fn serve_download(
        &self,
        token: &str,
        head: bool,
        now: OffsetDateTime,
    ) -> Result<Response<LocalBody>> {
        let claims = self.verify(token, "get", now)?;
        let key = ObjectKey::parse(&claims.key)?;
        let file = match tokio::fs::File::open(self.object_path(&key)).await {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::Core(tenantkit_core::Error::NotFound));
            }
            Err(e) => return Err(store_err(e)),
        };
        let length = file.metadata().await.map_err(store_err)?.len();
        let filename = claims.name.unwrap_or_else(|| "download".to_owned());
        let mut response = if head {
            Response::new(empty())
        } else {
            let stream =
                tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024).map_ok(Frame::data);
            Response::new(UnsyncBoxBody::new(StreamBody::new(stream)))
        };
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&claims.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        headers.insert(header::CONTENT_DISPOSITION, content_disposition(&filename));
        security_headers(headers);
        Ok(response)
    }
}

fn security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
}

/// The body type of [`LocalStorageService`]'s answers.
pub type LocalBody = UnsyncBoxBody<Bytes, io::Error>;

fn empty() -> LocalBody {
    UnsyncBoxBody::new(Full::new(Bytes::new()).map_err(|never: Infallible| match never {}))
}

fn problem(err: &Error) -> Response<LocalBody> {
    problem_response(tenantkit_core::Problem::from(err))
}

fn problem_response(problem: tenantkit_core::Problem) -> Response<LocalBody> {
    let response: Response<Bytes> = problem.into_response();
    let (parts, bytes) = response.into_parts();
    let mut response = Response::from_parts(
        parts,
        UnsyncBoxBody::new(Full::new(bytes).map_err(|never: Infallible| match never {})),
    );
    security_headers(response.headers_mut());
    response
}

/// Answers a [`LocalStore`]'s signed URLs, wherever it is mounted: `PUT …/upload/<token>`
/// (201 on success) and `GET`/`HEAD …/download/<token>`. Anything else answers 404 or 405 as
/// problem+json. Errors never reveal whether an object exists beyond what the signature
/// already grants.
#[derive(Debug, Clone)]
pub struct LocalStorageService {
    pub(super) store: LocalStore,
}

impl LocalStorageService {
    /// Handles one request at `now`.
    pub async fn handle<B>(&self, request: Request<B>, now: OffsetDateTime) -> Response<LocalBody>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: std::fmt::Display + Send,
    {
        let path = request.uri().path().to_owned();
        let mut segments = path.rsplitn(3, '/');
        let token = segments.next().unwrap_or_default().to_owned();
        let op = segments.next().unwrap_or_default();
        let method = request.method().clone();
        let result = match (op, &method) {
            ("upload", &Method::PUT) => {
                let (parts, body) = request.into_parts();
                self.store
                    .receive(&token, &parts.headers, body, now)
                    .await
                    .map(|()| {
                        let mut response = Response::new(empty());
                        *response.status_mut() = StatusCode::CREATED;
                        security_headers(response.headers_mut());
                        response
                    })
            }
            ("download", &Method::GET) => self.store.serve_download(&token, false, now).await,
            ("download", &Method::HEAD) => self.store.serve_download(&token, true, now).await,
            ("upload" | "download", _) => {
                return problem_response(tenantkit_core::Problem::new(
                    tenantkit_core::ErrorCode::MethodNotAllowed,
                    "Signed upload URLs take PUT; download URLs take GET or HEAD.",
                ));
            }
            _ => Err(Error::Core(tenantkit_core::Error::NotFound)),
        };
        match result {
            Ok(response) => response,
            Err(err) => {
                let mut response = problem(&err);
                // A refused upload ends the connection: the rest of its body is not read.
                if matches!(method, Method::PUT) {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
        }
    }
}

impl<B> tower::Service<Request<B>> for LocalStorageService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display + Send,
{
    type Response = Response<LocalBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move { Ok(service.handle(request, OffsetDateTime::now_utc()).await) })
    }
}
