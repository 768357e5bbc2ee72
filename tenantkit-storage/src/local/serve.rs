//! The HTTP side of the local backend: receiving signed uploads, serving signed downloads,
//! and the tower service that answers both.

use std::collections::HashSet;
use std::convert::Infallible;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use sha2::Digest as _;
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt as _;
use tokio::time::Instant;

use crate::disposition::content_disposition;
use crate::store::BoxFuture;
use crate::{Error, ObjectKey, Result, Sha256};

use super::{LocalStore, Meta, store_err, sync_dir, write_synced};

/// How slowly a body may move before the local store gives up on it. An upload that opens and
/// then sends nothing, or trickles a few bytes, is refused (408 `request_timeout`, nothing
/// kept); a download the client reads too slowly is cut off. Either would otherwise hold its
/// connection, a file and a task for as long as the client likes.
///
/// The rule: after `grace`, the bytes moved must keep ahead of `min_bytes_per_sec` for every
/// second past the grace period (so at 20 s with the defaults, at least 10 KiB), and an upload
/// may never wait longer than `idle_timeout` for its next piece.
///
/// `Default` (the secure setting): 20 s idle, 1 KiB/s after a 10 s grace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferLimits {
    /// The longest wait for the next piece of an upload body.
    pub idle_timeout: Duration,
    /// The lowest rate, in bytes per second, counted from the end of `grace`. `0` turns the
    /// rate check off (an upload's idle timeout still applies).
    pub min_bytes_per_sec: u64,
    /// How long a body may take before the rate applies (slow starts, TCP slow start).
    pub grace: Duration,
}

impl Default for TransferLimits {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(20),
            min_bytes_per_sec: 1024,
            grace: Duration::from_secs(10),
        }
    }
}

impl TransferLimits {
    /// When a body that started at `started` and has moved `moved` bytes falls behind the
    /// minimum rate; `None` without a rate.
    fn rate_deadline(&self, started: Instant, moved: u64) -> Option<Instant> {
        if self.min_bytes_per_sec == 0 {
            return None;
        }
        // `moved` bytes at `min_bytes_per_sec` cover this long after the grace period.
        let covered = Duration::from_secs_f64(moved as f64 / self.min_bytes_per_sec as f64);
        Some(started + self.grace + covered)
    }

    /// When the next piece of an upload body that started at `started`, of which `received`
    /// bytes came so far (the last at `last`), must have arrived.
    fn next_deadline(&self, started: Instant, last: Instant, received: u64) -> Instant {
        let idle = last + self.idle_timeout;
        self.rate_deadline(started, received)
            .map_or(idle, |rate| idle.min(rate))
    }

    /// Whether a download that started at `started` and has handed out `sent` bytes is
    /// behind the minimum rate at `now`.
    fn is_behind(&self, started: Instant, sent: u64, now: Instant) -> bool {
        self.rate_deadline(started, sent)
            .is_some_and(|deadline| now > deadline)
    }
}

/// A temporary file untouched this long belongs to no upload in progress: a live upload
/// writes at least every [`TransferLimits::idle_timeout`] (or is refused), so this is far past
/// any reasonable idle timeout.
pub(super) const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

/// Removes the temporary files in `dir` last modified over `age` ago: the remains of uploads
/// a crash interrupted (every other failure removes its own). Files of uploads in progress,
/// in this process or another one sharing the folder, are younger. Errors are logged, never
/// fatal: a leftover file costs disk space, not correctness.
pub(super) fn remove_stale_temp_files(dir: &Path, age: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = std::time::SystemTime::now();
    let mut removed = 0_usize;
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|modified| now.duration_since(modified).is_ok_and(|idle| idle > age));
        if stale && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(removed, "removed temporary files of interrupted uploads");
    }
}

/// The object keys of the uploads a store is receiving now.
#[derive(Debug, Default)]
pub(super) struct Receiving(Mutex<HashSet<String>>);

/// The claim on one key while its upload is received; released when dropped (on success,
/// failure, or when the request's future is dropped because the client went away).
struct ReceivingGuard<'a> {
    receiving: &'a Receiving,
    key: String,
}

impl Receiving {
    /// Claims `key`, or `None` while another upload to it is being received.
    fn claim(&self, key: &str) -> Option<ReceivingGuard<'_>> {
        let mut keys = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.insert(key.to_owned()).then(|| ReceivingGuard {
            receiving: self,
            key: key.to_owned(),
        })
    }
}

impl Drop for ReceivingGuard<'_> {
    fn drop(&mut self) {
        let mut keys = self
            .receiving
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.remove(&self.key);
    }
}

/// A temporary file and its `.meta` companion, removed when dropped: on every failure path,
/// including a request future dropped mid-body (client gone, deadline, shutdown). After a
/// success the committed object is a hard link, so removing the temporary name keeps it.
struct TempFiles {
    data: PathBuf,
    meta: PathBuf,
}

impl TempFiles {
    fn new(data: PathBuf) -> Self {
        let mut meta = data.clone().into_os_string();
        meta.push(".meta");
        Self {
            data,
            meta: PathBuf::from(meta),
        }
    }
}

impl Drop for TempFiles {
    fn drop(&mut self) {
        // Synchronous: a drop cannot await, and unlinking is quick. Absent files are fine.
        let _ = std::fs::remove_file(&self.data);
        let _ = std::fs::remove_file(&self.meta);
    }
}

impl LocalStore {
    /// This store with other limits on how slowly upload bodies may arrive.
    pub fn with_transfer_limits(mut self, limits: TransferLimits) -> Self {
        self.transfer = limits;
        self
    }

    /// Receives one signed upload: checks the token, the headers and, while streaming, the
    /// size and SHA-256; commits with fsync and a create-only link. Nothing is kept when any
    /// check fails, nor when the returned future is dropped midway.
    ///
    /// At most one upload per signed URL is received at a time: a second one answers
    /// [`Error::UploadInProgress`] at once, before reading its body. A body that stalls or
    /// trickles (see [`TransferLimits`]) answers [`Error::TooSlow`].
    ///
    /// # Errors
    /// [`Error::BadSignature`], [`Error::Expired`], [`Error::Refused`], [`Error::TooLarge`],
    /// [`Error::AlreadyExists`], [`Error::UploadInProgress`], [`Error::TooSlow`],
    /// [`Error::Store`].
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
        // One body per upload at a time: parallel PUTs to one URL could otherwise each write
        // up to the signed size to the temporary folder, past the quota reserved once.
        let Some(_receiving) = self.inner.receiving.claim(&claims.key) else {
            return Err(Error::UploadInProgress);
        };
        let target = self.object_path(&key);
        if tokio::fs::try_exists(&target).await.unwrap_or(false) {
            return Err(Error::AlreadyExists);
        }
        // Removed in every case, also when this future is dropped (after a success the link
        // keeps the data).
        let tmp = TempFiles::new(self.tmp_path());
        self.write_checked(&tmp, &key, body, size, expected, &claims.content_type)
            .await
    }

    async fn write_checked<B>(
        &self,
        tmp: &TempFiles,
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
            .open(&tmp.data)
            .await
            .map_err(store_err)?;
        let mut hasher = sha2::Sha256::new();
        let mut written: u64 = 0;
        let mut body = std::pin::pin!(body);
        let started = Instant::now();
        let mut last = started;
        loop {
            // Every wait for the body has a deadline: a stalled or trickling client is cut off.
            let deadline = self.transfer.next_deadline(started, last, written);
            let Some(frame) = tokio::time::timeout_at(deadline, body.frame())
                .await
                .map_err(|_| Error::TooSlow)?
            else {
                break;
            };
            last = Instant::now();
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
        let meta_json = serde_json::to_vec(&meta).map_err(|e| Error::Store(e.to_string()))?;
        write_synced(&tmp.meta, &meta_json).await?;

        let target = self.object_path(key);
        let dir = target.parent().map(Path::to_path_buf).unwrap_or_default();
        tokio::fs::create_dir_all(&dir).await.map_err(store_err)?;
        // The commit point: a hard link fails when the target exists, so two uploads to the
        // same key can never both win, and a reader never sees a partial file.
        match tokio::fs::hard_link(&tmp.data, &target).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists);
            }
            Err(e) => return Err(store_err(e)),
        }
        tokio::fs::rename(&tmp.meta, self.meta_path(key))
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
            Response::new(UnsyncBoxBody::new(StreamBody::new(
                self.paced_download(file),
            )))
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

impl LocalStore {
    /// The file's bytes in 64 KiB frames, ending in an error (which closes the connection)
    /// once the client takes them more slowly than the transfer limits allow: a client that
    /// reads a large file a few bytes at a time cannot hold its connection for weeks. A
    /// client that stops reading altogether is the server's write timeout's to end (this
    /// stream is not asked for more then).
    fn paced_download(
        &self,
        file: tokio::fs::File,
    ) -> impl futures_util::Stream<Item = io::Result<Frame<Bytes>>> + Send + 'static {
        let limits = self.transfer;
        let started = Instant::now();
        let mut sent: u64 = 0;
        tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024).map(move |chunk| {
            let chunk = chunk?;
            // Asked for the next piece: has the client kept up so far?
            if limits.is_behind(started, sent, Instant::now()) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client reads the download too slowly",
                ));
            }
            sent = sent.saturating_add(chunk.len() as u64);
            Ok(Frame::data(chunk))
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trickling_body_meets_the_rate_deadline_before_the_idle_one() {
        let limits = TransferLimits {
            idle_timeout: Duration::from_secs(20),
            min_bytes_per_sec: 1000,
            grace: Duration::from_secs(10),
        };
        let started = Instant::now();
        // Nothing yet: the grace period, then the rate, bound the first wait.
        assert_eq!(
            limits.next_deadline(started, started, 0),
            started + Duration::from_secs(10)
        );
        // 5,000 bytes cover 5 s at 1,000 B/s: due 15 s after the start even though the last
        // byte came at 14 s (its idle deadline would be 34 s).
        let last = started + Duration::from_secs(14);
        assert_eq!(
            limits.next_deadline(started, last, 5_000),
            started + Duration::from_secs(15)
        );
        // A fast body is bounded by the idle timeout only.
        assert_eq!(
            limits.next_deadline(started, last, 10_000_000),
            last + Duration::from_secs(20)
        );
        // A download is behind once its bytes no longer cover the time past the grace.
        assert!(!limits.is_behind(started, 0, started + Duration::from_secs(10)));
        assert!(limits.is_behind(started, 0, started + Duration::from_secs(11)));
        assert!(!limits.is_behind(started, 5_000, started + Duration::from_secs(15)));
        assert!(limits.is_behind(started, 5_000, started + Duration::from_secs(16)));
        // No rate check: the idle timeout alone.
        let idle_only = TransferLimits {
            min_bytes_per_sec: 0,
            ..limits
        };
        assert_eq!(
            idle_only.next_deadline(started, last, 0),
            last + Duration::from_secs(20)
        );
        assert!(!idle_only.is_behind(started, 0, started + Duration::from_secs(86_400)));
    }

    #[test]
    fn only_stale_temporary_files_are_removed() {
        let dir = tempfile::tempdir().expect("dir");
        let old = dir.path().join("old.part");
        let young = dir.path().join("young.part");
        std::fs::write(&old, b"left by a crash").expect("write");
        std::fs::write(&young, b"in progress").expect("write");
        let long_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .and_then(|f| f.set_modified(long_ago))
            .expect("age the file");
        remove_stale_temp_files(dir.path(), STALE_TEMP_AGE);
        assert!(!old.exists(), "a crash's leftover is removed");
        assert!(young.exists(), "an upload in progress keeps its file");
    }

    #[test]
    fn one_upload_per_key_at_a_time() {
        let receiving = Receiving::default();
        let first = receiving.claim("tenants/a/b").expect("first");
        assert!(receiving.claim("tenants/a/b").is_none(), "a second at once");
        assert!(receiving.claim("tenants/a/c").is_some(), "another key");
        drop(first);
        assert!(
            receiving.claim("tenants/a/b").is_some(),
            "free again once done"
        );
    }
}
