//! The upload lifecycle in the caller's transactions, with files hanging off a table of the
//! app's own (`documents`, keyed by `order`: neither a project nor an `id` column, and a
//! reserved word, which the library quotes):
//!
//! - an upload created in the same transaction as the app's row commits with it, and a
//!   rollback stores neither;
//! - a file hangs off a parent row the caller sees; a parent id of another tenant (or a made
//!   up one) is not found; no parent is fine; without a configured parent, `parent_id` is
//!   a validation error;
//! - a completion and a deletion are written in the caller's transaction (a rollback undoes
//!   them; the deleted file's bytes go only once its deletion is committed);
//! - a transaction of another scope than the caller's is refused;
//! - migration 3003 keeps the parent of files made before it.
//!
//! On both databases, over the local store.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use http_body_util::Full;
use sqlx::migrate::Migrator;
use tenantkit_core::testing::{TestDb, TwoTenants};
use tenantkit_core::{
    Backend, ClientInfo, Database, MigrationSet, Migrations, PageRequest, Principal, TenantId,
    TenantScope, TenantTx, with_conn,
};
use tenantkit_storage::{
    FileParent, LocalStore, NewUpload, ObjectKey, ObjectStore as _, Sha256, Storage, StoredFile,
    UploadId, UploadTicket,
};

const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

struct Fixture {
    test_db: TestDb,
    world: TwoTenants,
    store: LocalStore,
    storage: Storage,
    _dir: tempfile::TempDir,
}

/// The app's own table, made by the test: a tenant table keyed by `order`, behind
/// row-level security on PostgreSQL.
const DOCUMENTS_SQLITE: &str = "CREATE TABLE documents (
    \"order\"   BLOB PRIMARY KEY NOT NULL,
    tenant_id   BLOB NOT NULL REFERENCES tenants (id),
    title       TEXT NOT NULL
)";
const DOCUMENTS_POSTGRES: &str = "CREATE TABLE documents (
    \"order\"   uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    title       text NOT NULL
);
SELECT tenantkit_enable_tenant_rls('documents');
GRANT SELECT, INSERT, UPDATE, DELETE ON documents TO tenantkit_app;";

async fn fixture(backend: Backend) -> Option<Fixture> {
    let test_db = TestDb::new(
        backend,
        &Migrations::new().with(tenantkit_storage::migrations()),
    )
    .await?;
    test_db
        .execute_as_owner(match backend {
            Backend::Sqlite => DOCUMENTS_SQLITE,
            _ => DOCUMENTS_POSTGRES,
        })
        .await;
    let world = TwoTenants::create(&test_db.db).await;
    let dir = tempfile::tempdir().expect("dir");
    let store = LocalStore::new(dir.path(), "http://127.0.0.1/files", &[7u8; 32]).expect("store");
    let storage = Storage::new(test_db.db.clone(), Arc::new(store.clone()))
        .with_parent(FileParent::new("documents", "order").expect("a valid parent"));
    Some(Fixture {
        test_db,
        world,
        store,
        storage,
        _dir: dir,
    })
}

fn png_upload(parent: Option<uuid::Uuid>) -> NewUpload {
    NewUpload {
        filename: "a.png".into(),
        content_type: "image/png".into(),
        size: PNG.len() as u64,
        sha256: Sha256::of(PNG).to_hex(),
        parent_id: parent,
        method: None,
    }
}

impl Fixture {
    fn db(&self) -> &Database {
        &self.test_db.db
    }

    async fn begin(&self, who: &Principal) -> TenantTx {
        self.db().begin(&TenantScope::of(who)).await.expect("tx")
    }

    /// A document of the caller's tenant, written in `tx`.
    async fn document(tx: &mut TenantTx) -> uuid::Uuid {
        let (id, tenant) = (uuid::Uuid::now_v7(), tx.tenant_id());
        with_conn!(tx, |c| {
            sqlx::query("INSERT INTO documents (\"order\", tenant_id, title) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(tenant)
                .bind("Quarterly report")
                .execute(c)
                .await
                .map(drop)
        })
        .expect("document");
        id
    }

    /// A committed document of `who`'s tenant.
    async fn committed_document(&self, who: &Principal) -> uuid::Uuid {
        let mut tx = self.begin(who).await;
        let id = Self::document(&mut tx).await;
        tx.commit().await.expect("commit");
        id
    }

    /// Sends the PNG to the ticket's URL.
    async fn send(&self, ticket: &UploadTicket) {
        let token = ticket.url.rsplit('/').next().expect("token");
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
        self.store
            .receive(
                token,
                &headers,
                Full::new(Bytes::from_static(PNG)),
                tenantkit_core::now(),
            )
            .await
            .expect("upload");
    }

    /// An upload of `who` (committed), its bytes sent.
    async fn uploaded(&self, who: &Principal, parent: Option<uuid::Uuid>) -> UploadId {
        let mut tx = self.begin(who).await;
        let ticket = self
            .storage
            .create_upload(&mut tx, who, png_upload(parent))
            .await
            .expect("intent");
        tx.commit().await.expect("commit");
        self.send(&ticket).await;
        ticket.id
    }

    /// Verifies and completes `id` in a transaction of its own.
    async fn complete(
        &self,
        who: &Principal,
        id: UploadId,
    ) -> tenantkit_storage::Result<StoredFile> {
        let client = ClientInfo::operator();
        let verified = self.storage.verify_upload(who, &client, id).await?;
        let mut tx = self.begin(who).await;
        let file = self
            .storage
            .complete(&mut tx, who, &client, verified)
            .await?;
        tx.commit().await?;
        Ok(file)
    }

    async fn upload_rows(&self) -> i64 {
        let mut tx = self.db().begin_system().await.expect("tx");
        let count: i64 = with_conn!(&mut tx, |c| {
            sqlx::query_scalar("SELECT count(*) FROM storage_uploads")
                .fetch_one(c)
                .await
        })
        .expect("count");
        tx.commit().await.expect("commit");
        count
    }
}

fn is_not_found(err: &tenantkit_storage::Error) -> bool {
    matches!(
        err,
        tenantkit_storage::Error::Core(tenantkit_core::Error::NotFound)
    )
}

/// The upload is created in the transaction of the app's own row: both commit together, and
/// a rollback (the transaction dropped) stores neither.
async fn an_upload_commits_or_rolls_back_with_the_apps_row(fixture: Fixture) {
    let who = &fixture.world.a.principal;
    // Rolled back: neither the document nor the upload exists; its signed URL leads nowhere.
    let mut tx = fixture.begin(who).await;
    let document = Fixture::document(&mut tx).await;
    let ticket = fixture
        .storage
        .create_upload(&mut tx, who, png_upload(Some(document)))
        .await
        .expect("intent");
    drop(tx);
    assert_eq!(fixture.upload_rows().await, 0);
    let err = fixture
        .storage
        .verify_upload(who, &ClientInfo::operator(), ticket.id)
        .await
        .expect_err("no such upload");
    assert!(is_not_found(&err), "{err:?}");

    // Committed: the document and its upload, which completes into a file of the document.
    let mut tx = fixture.begin(who).await;
    let document = Fixture::document(&mut tx).await;
    let ticket = fixture
        .storage
        .create_upload(&mut tx, who, png_upload(Some(document)))
        .await
        .expect("intent");
    tx.commit().await.expect("commit");
    fixture.send(&ticket).await;
    let file = fixture.complete(who, ticket.id).await.expect("file");
    assert_eq!(file.parent_id, Some(document));
    let mut tx = fixture
        .db()
        .begin_read(&TenantScope::of(who))
        .await
        .expect("tx");
    let listed = fixture
        .storage
        .files(&mut tx, who, Some(document), PageRequest::default())
        .await
        .expect("files");
    let one = fixture
        .storage
        .file(&mut tx, who, file.id)
        .await
        .expect("file");
    tx.commit().await.expect("commit");
    assert_eq!(
        listed.items.iter().map(|f| f.id).collect::<Vec<_>>(),
        [file.id]
    );
    assert_eq!(one.parent_id, Some(document));
    assert!(one.download_url.is_some());
}

/// A parent row of the caller's tenant takes files; another tenant's row, or a made-up id,
/// is not found (and stores nothing); no parent is fine. Another tenant sees none of them.
async fn parents_are_checked_in_the_callers_tenant(fixture: Fixture) {
    let (a, b) = (&fixture.world.a.principal, &fixture.world.b.principal);
    let of_b = fixture.committed_document(b).await;
    for parent in [of_b, uuid::Uuid::now_v7()] {
        let mut tx = fixture.begin(a).await;
        let err = fixture
            .storage
            .create_upload(&mut tx, a, png_upload(Some(parent)))
            .await
            .expect_err("not a parent of the caller's tenant");
        assert!(is_not_found(&err), "{err:?}");
        tx.commit().await.expect("commit");
    }
    assert_eq!(fixture.upload_rows().await, 0);

    let of_a = fixture.committed_document(a).await;
    let with_parent = fixture.uploaded(a, Some(of_a)).await;
    let with_parent = fixture.complete(a, with_parent).await.expect("file");
    let without = fixture.uploaded(a, None).await;
    let without = fixture.complete(a, without).await.expect("file");
    assert_eq!(
        (with_parent.parent_id, without.parent_id),
        (Some(of_a), None)
    );

    let mut tx = fixture
        .db()
        .begin_read(&TenantScope::of(a))
        .await
        .expect("tx");
    let all = fixture
        .storage
        .files(&mut tx, a, None, PageRequest::default())
        .await
        .expect("files");
    tx.commit().await.expect("commit");
    assert_eq!(all.items.len(), 2);

    let mut tx = fixture
        .db()
        .begin_read(&TenantScope::of(b))
        .await
        .expect("tx");
    let seen_by_b = fixture
        .storage
        .files(&mut tx, b, None, PageRequest::default())
        .await
        .expect("files");
    let err = fixture
        .storage
        .file(&mut tx, b, with_parent.id)
        .await
        .expect_err("another tenant's file");
    tx.commit().await.expect("commit");
    assert!(seen_by_b.items.is_empty());
    assert!(is_not_found(&err), "{err:?}");
}

/// Without a configured parent, `parent_id` is a validation error naming it.
async fn a_parent_needs_a_configured_table(fixture: Fixture) {
    let who = &fixture.world.a.principal;
    let storage = Storage::new(fixture.db().clone(), Arc::new(fixture.store.clone()));
    let mut tx = fixture.begin(who).await;
    let err = storage
        .create_upload(&mut tx, who, png_upload(Some(uuid::Uuid::now_v7())))
        .await
        .expect_err("no parent table");
    match err {
        tenantkit_storage::Error::Core(tenantkit_core::Error::Validation(errors)) => {
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].field, "parent_id");
        }
        other => panic!("{other:?}"),
    }
    storage
        .create_upload(&mut tx, who, png_upload(None))
        .await
        .expect("no parent is fine");
    tx.commit().await.expect("commit");
}

/// The completion's file is written in the caller's transaction: rolled back, the upload
/// stays pending and completes later; a deletion rolled back keeps the file and its bytes,
/// and the bytes go only once the deletion is committed.
async fn completion_and_deletion_are_the_callers_to_commit(fixture: Fixture) {
    let who = &fixture.world.a.principal;
    let client = ClientInfo::operator();
    let id = fixture.uploaded(who, None).await;
    let verified = fixture
        .storage
        .verify_upload(who, &client, id)
        .await
        .expect("verified");
    let mut tx = fixture.begin(who).await;
    let file = fixture
        .storage
        .complete(&mut tx, who, &client, verified)
        .await
        .expect("file");
    drop(tx);
    let mut tx = fixture
        .db()
        .begin_read(&TenantScope::of(who))
        .await
        .expect("tx");
    let err = fixture
        .storage
        .file(&mut tx, who, file.id)
        .await
        .expect_err("rolled back");
    tx.commit().await.expect("commit");
    assert!(is_not_found(&err), "{err:?}");
    let file = fixture.complete(who, id).await.expect("completed again");
    let key = ObjectKey::new(file.tenant_id, file.object_id);

    // A deletion rolled back: the file is whole; deleting its object meanwhile keeps it.
    let mut tx = fixture.begin(who).await;
    let deleted = fixture
        .storage
        .delete_file(&mut tx, who, &client, file.id)
        .await
        .expect("deleted");
    assert_eq!(deleted.file().id, file.id);
    drop(tx);
    fixture.storage.delete_object(deleted).await;
    assert!(fixture.store.head(&key).await.expect("head").is_some());
    let mut tx = fixture
        .db()
        .begin_read(&TenantScope::of(who))
        .await
        .expect("tx");
    fixture
        .storage
        .file(&mut tx, who, file.id)
        .await
        .expect("still there");
    tx.commit().await.expect("commit");

    // Committed: the object goes too.
    let mut tx = fixture.begin(who).await;
    let deleted = fixture
        .storage
        .delete_file(&mut tx, who, &client, file.id)
        .await
        .expect("deleted");
    tx.commit().await.expect("commit");
    fixture.storage.delete_object(deleted).await;
    assert!(fixture.store.head(&key).await.expect("head").is_none());
}

/// A transaction that is not the caller's own scope (another tenant's, or one that sees
/// every team for a member) is refused before anything is written.
async fn a_transaction_of_another_scope_is_refused(fixture: Fixture) {
    let (a, b) = (&fixture.world.a.principal, &fixture.world.b.principal);
    let (_, member) = fixture
        .world
        .a
        .add_user(fixture.db(), tenantkit_core::Role::Member)
        .await;
    for (tx_of, caller) in [
        (TenantScope::of(b), a),
        (TenantScope::for_system(fixture.world.a.tenant.id), &member),
    ] {
        let mut tx = fixture.db().begin(&tx_of).await.expect("tx");
        let err = fixture
            .storage
            .create_upload(&mut tx, caller, png_upload(None))
            .await
            .expect_err("another scope");
        assert!(
            matches!(err, tenantkit_storage::Error::Config(_)),
            "{err:?}"
        );
        tx.commit().await.expect("commit");
    }
    assert_eq!(fixture.upload_rows().await, 0);
}

/// Storage's migrations without 3003: the database of the release before it.
fn before_3003(mut migrator: Migrator) -> Migrator {
    migrator.migrations = migrator
        .migrations
        .iter()
        .filter(|m| m.version < 3003)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    migrator
}

fn old_sqlite() -> Migrator {
    before_3003(sqlx::migrate!("./migrations/sqlite"))
}

fn old_postgres() -> Migrator {
    before_3003(sqlx::migrate!("./migrations/postgres"))
}

/// Files and uploads made before migration 3003 keep their parent (`project_id` became
/// `parent_id`, with its data), and the lifecycle reads them.
async fn migration_3003_keeps_the_parent(backend: Backend) {
    let old = MigrationSet::new("tenantkit-storage", old_sqlite, old_postgres);
    let Some(test_db) = TestDb::new(backend, &Migrations::new().with(old)).await else {
        return;
    };
    let world = TwoTenants::create(&test_db.db).await;
    let tenant: TenantId = world.a.tenant.id;
    let (upload, file, object, parent) = (
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
    );
    let now = tenantkit_core::now();
    let mut tx = test_db.db.begin_system().await.expect("tx");
    with_conn!(&mut tx, |c| {
        sqlx::query(
            "INSERT INTO storage_uploads (id, tenant_id, object_id, project_id, filename, \
             content_type, size, sha256, method, created_at, expires_at, state, file_id) \
             VALUES ($1, $2, $3, $4, 'a.png', 'image/png', 1, $5, 'PUT', $6, $6, 'completed', $7)",
        )
        .bind(upload)
        .bind(tenant)
        .bind(object)
        .bind(parent)
        .bind(vec![0u8; 32])
        .bind(now)
        .bind(file)
        .execute(&mut *c)
        .await?;
        sqlx::query(
            "INSERT INTO storage_files (id, tenant_id, upload_id, object_id, project_id, \
             filename, content_type, size, sha256, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'a.png', 'image/png', 1, $6, $7)",
        )
        .bind(file)
        .bind(tenant)
        .bind(upload)
        .bind(object)
        .bind(parent)
        .bind(vec![0u8; 32])
        .bind(now)
        .execute(c)
        .await
        .map(drop)
    })
    .expect("rows of the old schema");
    tx.commit().await.expect("commit");

    test_db
        .migrate_as_owner(&Migrations::new().with(tenantkit_storage::migrations()))
        .await;
    let mut tx = test_db.db.begin_system().await.expect("tx");
    let parents: Vec<(Option<uuid::Uuid>, Option<uuid::Uuid>)> = with_conn!(&mut tx, |c| {
        sqlx::query_as(
            "SELECT u.parent_id, f.parent_id FROM storage_uploads u \
             JOIN storage_files f ON f.upload_id = u.id",
        )
        .fetch_all(c)
        .await
    })
    .expect("parents");
    tx.commit().await.expect("commit");
    assert_eq!(parents, [(Some(parent), Some(parent))]);
}

/// Deleting a parent takes its files: `delete_files_of` removes the parent's files and pending
/// uploads in the caller's transaction (a rollback keeps them all), then `delete_objects` their
/// bytes; another parent's files, files without a parent and another tenant's are untouched,
/// and another tenant's parent is not found.
async fn a_parents_files_go_with_it(fixture: Fixture) {
    let (who, client) = (&fixture.world.a.principal, ClientInfo::operator());
    let document = fixture.committed_document(who).await;
    let other_document = fixture.committed_document(who).await;
    let mut files = Vec::new();
    for _ in 0..2 {
        let id = fixture.uploaded(who, Some(document)).await;
        let file = fixture.storage.complete_upload(who, &client, id).await;
        files.push(file.expect("completed in one call"));
    }
    let pending = fixture.uploaded(who, Some(document)).await;
    let id = fixture.uploaded(who, Some(other_document)).await;
    let kept = fixture
        .complete(who, id)
        .await
        .expect("file of the other document");
    let id = fixture.uploaded(who, None).await;
    let unparented = fixture
        .complete(who, id)
        .await
        .expect("file without a parent");

    let of_b = &fixture.world.b.principal;
    let mut tx = fixture.begin(of_b).await;
    let err = (fixture
        .storage
        .delete_files_of(&mut tx, of_b, &client, document)
        .await)
        .expect_err("another tenant's parent");
    assert!(is_not_found(&err), "{err:?}");
    drop(tx);

    // Rolled back: every file stays.
    let mut tx = fixture.begin(who).await;
    let deleted = (fixture
        .storage
        .delete_files_of(&mut tx, who, &client, document)
        .await)
        .expect("deleted");
    assert_eq!(deleted.len(), 2);
    drop(tx);
    fixture.storage.delete_objects(deleted).await;
    let fixture = &fixture;
    let listed = |parent: Option<uuid::Uuid>| async move {
        let mut tx = (fixture.db().begin_read(&TenantScope::of(who)).await).expect("tx");
        let page = (fixture
            .storage
            .files(&mut tx, who, parent, Default::default())
            .await)
            .expect("files");
        page.items.into_iter().map(|f| f.id).collect::<Vec<_>>()
    };
    assert_eq!(
        listed(Some(document)).await.len(),
        2,
        "a rollback keeps the files"
    );
    for file in &files {
        let key = ObjectKey::new(file.tenant_id, file.object_id);
        let head = fixture.store.head(&key).await.expect("head");
        assert!(
            head.is_some(),
            "delete_objects after a rollback keeps the bytes"
        );
    }

    // Committed with the document's own deletion: the files, their bytes and the pending
    // upload go; nothing else does.
    let mut tx = fixture.begin(who).await;
    let deleted = (fixture
        .storage
        .delete_files_of(&mut tx, who, &client, document)
        .await)
        .expect("deleted");
    let mut ids: Vec<_> = deleted.iter().map(|d| d.file().id).collect();
    ids.sort_by_key(|id| id.as_uuid());
    let mut expected: Vec<_> = files.iter().map(|f| f.id).collect();
    expected.sort_by_key(|id| id.as_uuid());
    assert_eq!(ids, expected);
    let tenant = tx.tenant_id();
    with_conn!(&mut tx, |c| {
        sqlx::query("DELETE FROM documents WHERE tenant_id = $1 AND \"order\" = $2")
            .bind(tenant)
            .bind(document)
            .execute(c)
            .await
            .map(drop)
    })
    .expect("the document");
    tx.commit().await.expect("commit");
    fixture.storage.delete_objects(deleted).await;
    for file in &files {
        let key = ObjectKey::new(file.tenant_id, file.object_id);
        assert!(fixture.store.head(&key).await.expect("head").is_none());
    }
    assert!(listed(Some(document)).await.is_empty());
    assert_eq!(listed(Some(other_document)).await, [kept.id]);
    assert!(listed(None).await.contains(&unparented.id));
    let err = (fixture.storage.complete_upload(who, &client, pending).await)
        .expect_err("the pending upload went with its parent");
    assert!(is_not_found(&err), "{err:?}");
}

tenantkit_core::backend_tests!(
    fixture = fixture;
    a_parents_files_go_with_it,
    an_upload_commits_or_rolls_back_with_the_apps_row,
    parents_are_checked_in_the_callers_tenant,
    a_parent_needs_a_configured_table,
    completion_and_deletion_are_the_callers_to_commit,
    a_transaction_of_another_scope_is_refused,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_3003_keeps_the_parent_on_sqlite() {
    migration_3003_keeps_the_parent(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_3003_keeps_the_parent_on_postgres() {
    migration_3003_keeps_the_parent(Backend::Postgres).await;
}
