//! The upload lifecycle at the exact moments two actors meet, made deterministic by a store
//! that runs another actor's whole operation inside one of its own calls:
//!
//! - a completion that sees other bytes (a swap) after another completion made the file must
//!   not delete the file's bytes, and answers the file;
//! - a sweep of an expired upload racing its completion never leaves a file row without
//!   bytes.
//!
//! On both databases, over the local store.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use http_body_util::Full;
use tenantkit_core::testing::{TestDb, TwoTenants};
use tenantkit_core::{
    Backend, ClientInfo, Database, Migrations, Principal, TenantId, TenantScope, with_conn,
};
use tenantkit_storage::{
    BoxFuture, LocalStore, NewUpload, ObjectId, ObjectInfo, ObjectKey, ObjectMeta, ObjectStore,
    Result, SignedDownload, SignedUpload, Storage, StoredFile, UploadId, UploadIntent,
    UploadMethod,
};
use time::{Duration, OffsetDateTime};

/// Which call of the store runs the hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// The first `head`, which then answers a size one byte off: the object "was swapped".
    Head,
    /// The first `delete`, which then deletes.
    Delete,
}

type Hook = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// A local store that runs a hook inside one of its calls.
struct Hooked {
    inner: LocalStore,
    hook: Mutex<Option<(At, Hook)>>,
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooked").finish_non_exhaustive()
    }
}

impl Hooked {
    fn take(&self, at: At) -> Option<Hook> {
        let mut hook = self.hook.lock().expect("hook lock");
        match hook.take() {
            Some((when, run)) if when == at => Some(run),
            other => {
                *hook = other;
                None
            }
        }
    }
}

impl ObjectStore for Hooked {
    fn methods(&self) -> &'static [UploadMethod] {
        self.inner.methods()
    }

    fn sign_upload<'a>(
        &'a self,
        key: &'a ObjectKey,
        intent: &'a UploadIntent,
        method: UploadMethod,
        now: OffsetDateTime,
        expires_in: Duration,
    ) -> BoxFuture<'a, Result<SignedUpload>> {
        self.inner.sign_upload(key, intent, method, now, expires_in)
    }

    fn sign_download<'a>(
        &'a self,
        key: &'a ObjectKey,
        filename: &'a str,
        content_type: &'a str,
        now: OffsetDateTime,
        expires_in: Duration,
    ) -> BoxFuture<'a, Result<SignedDownload>> {
        self.inner
            .sign_download(key, filename, content_type, now, expires_in)
    }

    fn head<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<Option<ObjectMeta>>> {
        Box::pin(async move {
            let Some(hook) = self.take(At::Head) else {
                return self.inner.head(key).await;
            };
            hook().await;
            Ok(self.inner.head(key).await?.map(|meta| ObjectMeta {
                size: meta.size + 1,
                ..meta
            }))
        })
    }

    fn read_prefix<'a>(&'a self, key: &'a ObjectKey, len: usize) -> BoxFuture<'a, Result<Vec<u8>>> {
        self.inner.read_prefix(key, len)
    }

    fn digest<'a>(
        &'a self,
        key: &'a ObjectKey,
    ) -> BoxFuture<'a, Result<Option<tenantkit_storage::Sha256>>> {
        self.inner.digest(key)
    }

    fn read_all<'a>(
        &'a self,
        key: &'a ObjectKey,
        visit: &'a mut (dyn FnMut(&[u8]) + Send),
    ) -> BoxFuture<'a, Result<bool>> {
        self.inner.read_all(key, visit)
    }

    fn pin<'a>(
        &'a self,
        key: &'a ObjectKey,
        to: &'a ObjectKey,
    ) -> BoxFuture<'a, Result<Option<ObjectKey>>> {
        self.inner.pin(key, to)
    }

    fn delete<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if let Some(hook) = self.take(At::Delete) {
                hook().await;
            }
            self.inner.delete(key).await
        })
    }

    fn list<'a>(
        &'a self,
        after: Option<&'a ObjectKey>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<ObjectInfo>>> {
        self.inner.list(after, limit)
    }
}

struct Fixture {
    test_db: TestDb,
    world: TwoTenants,
    store: Arc<Hooked>,
    storage: Storage,
    _dir: tempfile::TempDir,
}

async fn fixture(backend: Backend) -> Option<Fixture> {
    let test_db = TestDb::new(
        backend,
        &Migrations::new().with(tenantkit_storage::migrations()),
    )
    .await?;
    let world = TwoTenants::create(&test_db.db).await;
    let dir = tempfile::tempdir().expect("dir");
    let inner = LocalStore::new(dir.path(), "http://127.0.0.1/storage", &[7u8; 32]).expect("store");
    let store = Arc::new(Hooked {
        inner,
        hook: Mutex::new(None),
    });
    let storage = Storage::new(test_db.db.clone(), store.clone());
    Some(Fixture {
        test_db,
        world,
        store,
        storage,
        _dir: dir,
    })
}

const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

impl Fixture {
    /// An upload whose bytes are in the store, not yet completed.
    async fn uploaded(&self) -> UploadId {
        let mut tx = self
            .test_db
            .db
            .begin(&TenantScope::of(&self.world.a.principal))
            .await
            .expect("tx");
        let ticket = self
            .storage
            .create_upload(
                &mut tx,
                &self.world.a.principal,
                NewUpload {
                    filename: "a.png".into(),
                    content_type: "image/png".into(),
                    size: PNG.len() as u64,
                    sha256: tenantkit_storage::Sha256::of(PNG).to_hex(),
                    parent_id: None,
                    method: None,
                },
            )
            .await
            .expect("intent");
        tx.commit().await.expect("commit");
        let token = ticket.url.rsplit('/').next().expect("token");
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
        self.store
            .inner
            .receive(
                token,
                &headers,
                Full::new(Bytes::from_static(PNG)),
                tenantkit_core::now(),
            )
            .await
            .expect("upload");
        ticket.id
    }

    fn hook(&self, at: At, hook: Hook) {
        *self.store.hook.lock().expect("hook lock") = Some((at, hook));
    }

    /// Every file row, with whether its object is in the store.
    async fn files_with_bytes(&self) -> Vec<bool> {
        let mut tx = self.test_db.db.begin_system().await.expect("tx");
        let rows: Vec<(TenantId, ObjectId)> = with_conn!(&mut tx, |c| {
            sqlx::query_as("SELECT tenant_id, object_id FROM storage_files")
                .fetch_all(c)
                .await
        })
        .expect("files");
        tx.commit().await.expect("commit");
        let mut found = Vec::new();
        for (tenant, object) in rows {
            let key = ObjectKey::new(tenant, object);
            found.push(self.store.inner.head(&key).await.expect("head").is_some());
        }
        found
    }
}

/// A whole completion: the object verified with no transaction open, then the file made in
/// the caller's transaction.
async fn complete(
    storage: &Storage,
    db: &Database,
    principal: &Principal,
    id: UploadId,
) -> Result<StoredFile> {
    let client = ClientInfo::operator();
    let verified = storage.verify_upload(principal, &client, id).await?;
    let mut tx = db.begin(&TenantScope::of(principal)).await?;
    let file = storage
        .complete(&mut tx, principal, &client, verified)
        .await?;
    tx.commit().await?;
    Ok(file)
}

/// Completion A sees a swapped object (its `head` answers another size) just after
/// completion B made the file from the right bytes: A must keep B's bytes and answer B's file.
async fn a_mismatch_after_completion_keeps_the_file_bytes(fixture: Fixture) {
    let id = fixture.uploaded().await;
    let winner = Arc::new(Mutex::new(None));
    let (storage, db, principal, won) = (
        fixture.storage.clone(),
        fixture.test_db.db.clone(),
        fixture.world.a.principal.clone(),
        winner.clone(),
    );
    fixture.hook(
        At::Head,
        Box::new(move || {
            Box::pin(async move {
                let file = complete(&storage, &db, &principal, id)
                    .await
                    .expect("the other completion");
                *won.lock().expect("lock") = Some(file.id);
            })
        }),
    );
    let answer = complete(
        &fixture.storage,
        &fixture.test_db.db,
        &fixture.world.a.principal,
        id,
    )
    .await
    .expect("the completed file, not a mismatch");
    let winner = winner.lock().expect("lock").expect("the hook ran");
    assert_eq!(answer.id, winner);
    assert_eq!(fixture.files_with_bytes().await, [true]);
}

/// The sweeper works on an expired upload while it is being completed (the completion runs
/// inside the sweeper's object delete): whichever wins, no file row is left without bytes.
async fn a_sweep_racing_a_completion_leaves_no_file_without_bytes(fixture: Fixture) {
    let id = fixture.uploaded().await;
    let outcome = Arc::new(Mutex::new(None));
    let (storage, db, principal, seen) = (
        fixture.storage.clone(),
        fixture.test_db.db.clone(),
        fixture.world.a.principal.clone(),
        outcome.clone(),
    );
    fixture.hook(
        At::Delete,
        Box::new(move || {
            Box::pin(async move {
                let result = complete(&storage, &db, &principal, id).await;
                *seen.lock().expect("lock") = Some(result.map(|file| file.id));
            })
        }),
    );
    let later = tenantkit_core::now() + Duration::hours(3);
    let report = fixture.storage.sweep(later).await.expect("sweep");
    let outcome = outcome.lock().expect("lock").take().expect("the hook ran");
    let files = fixture.files_with_bytes().await;
    assert!(files.iter().all(|&bytes| bytes), "a file row without bytes");
    // The sweep claimed the row first, so the completion found nothing to complete.
    assert_eq!(report.expired_uploads, 1);
    assert!(outcome.is_err(), "{outcome:?}");
    assert!(files.is_empty());
}

/// Three hours from now: past an upload's expiry plus the default grace period.
fn three_hours_later() -> OffsetDateTime {
    tenantkit_core::now() + Duration::hours(3)
}

/// `Sweeper::run` sweeps on its own, counts the expired upload and the orphan it removed in
/// its stats handle (readable while it runs), and returns once its shutdown future completes.
async fn the_sweeper_runs_until_shutdown_and_counts(fixture: Fixture) {
    fixture.uploaded().await;
    // An orphan: bytes no upload or file row names (written through a second upload's URL,
    // whose row is then gone).
    let orphan = fixture.uploaded().await;
    {
        let mut tx = fixture.test_db.db.begin_system().await.expect("tx");
        with_conn!(&mut tx, |c| {
            sqlx::query("DELETE FROM storage_uploads WHERE id = $1")
                .bind(orphan)
                .execute(c)
                .await
                .map(drop)
        })
        .expect("delete the row");
        tx.commit().await.expect("commit");
    }
    let sweeper = tenantkit_storage::Sweeper::new(
        fixture.storage.clone(),
        std::time::Duration::from_millis(1),
    )
    .with_clock(three_hours_later);
    let stats = sweeper.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        sweeper
            .run(async move {
                let _ = stopped.await;
            })
            .await;
    });
    tokio::time::timeout(std::time::Duration::from_secs(120), async {
        while stats.sweeps() < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("hang guard: two sweeps ran");
    assert_eq!(
        (stats.expired_uploads(), stats.orphans(), stats.failures()),
        (1, 1, 0),
        "the expired upload and the orphan, each once"
    );
    stop.send(()).expect("the sweeper is running");
    tokio::time::timeout(std::time::Duration::from_secs(120), running)
        .await
        .expect("hang guard: run() returned after shutdown")
        .expect("the sweeper task");
    let listed = fixture.store.inner.list(None, 10).await.expect("list");
    assert!(listed.is_empty(), "{listed:?}");
}

/// A sweep that fails is counted, and `run` carries on (and still stops on shutdown).
async fn a_failed_sweep_is_counted(fixture: Fixture) {
    let sweeper = tenantkit_storage::Sweeper::new(
        fixture.storage.clone(),
        std::time::Duration::from_millis(1),
    );
    let stats = sweeper.stats();
    fixture.test_db.db.close().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        sweeper
            .run(async move {
                let _ = stopped.await;
            })
            .await;
    });
    tokio::time::timeout(std::time::Duration::from_secs(120), async {
        while stats.failures() < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("hang guard: failed sweeps were counted");
    assert_eq!(stats.sweeps(), 0);
    stop.send(()).expect("the sweeper is running");
    tokio::time::timeout(std::time::Duration::from_secs(120), running)
        .await
        .expect("hang guard: run() returned after shutdown")
        .expect("the sweeper task");
}

tenantkit_core::backend_tests!(
    fixture = fixture;
    a_mismatch_after_completion_keeps_the_file_bytes,
    a_sweep_racing_a_completion_leaves_no_file_without_bytes,
    the_sweeper_runs_until_shutdown_and_counts, a_failed_sweep_is_counted
);
