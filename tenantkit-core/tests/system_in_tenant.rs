//! `SystemTx::in_tenant`: a system transaction acting in one tenant (a webhook handler that
//! learns its tenant from a verified event and writes that tenant's rows), on both backends.
//!
//! - inside the handle, a row of that tenant is writable and visible, and commits with the
//!   system transaction;
//! - on PostgreSQL, row-level security hides every other tenant's rows inside it (tenant-only
//!   tables and tables that opt into system access alike) and refuses a row of another
//!   tenant; on SQLite nothing is enforced by the database (as for a `TenantTx`);
//! - after `leave`, tenant-only tables read as empty again on PostgreSQL;
//! - a handle dropped without `leave` poisons the system transaction: its commit refuses and
//!   nothing is written, on both backends.

use tenantkit_core::testing::{TestDb, TwoTenants};
use tenantkit_core::{Backend, Error, MigrationSet, Migrations, TenantId, Transaction, with_conn};

tenantkit_core::define_id!(
    /// Identifies a note.
    NoteId, "note id"
);

/// The test application's notes table (tenant rows behind RLS, no system access).
fn notes_migrations() -> MigrationSet {
    MigrationSet::new(
        "notes (test application)",
        || sqlx::migrate!("./tests/notes/sqlite"),
        || sqlx::migrate!("./tests/notes/postgres"),
    )
}

async fn db(backend: Backend) -> Option<TestDb> {
    TestDb::new(backend, &Migrations::new().with(notes_migrations())).await
}

async fn insert_note<T: Transaction>(
    tx: &mut T,
    tenant: TenantId,
    body: &str,
) -> tenantkit_core::Result<()> {
    with_conn!(tx, |c| {
        sqlx::query("INSERT INTO notes (id, tenant_id, body) VALUES ($1, $2, $3)")
            .bind(NoteId::new())
            .bind(tenant)
            .bind(body)
            .execute(c)
            .await
            .map(drop)
    })?;
    Ok(())
}

async fn count<T: Transaction>(tx: &mut T, sql: &str, tenant: Option<TenantId>) -> i64 {
    with_conn!(tx, |c| {
        let query = sqlx::query_scalar(sql);
        let query = match tenant {
            Some(tenant) => query.bind(tenant),
            None => query,
        };
        query.fetch_one(c).await
    })
    .expect("count")
}

/// Notes of `tenant` as that tenant's own transaction sees them.
async fn notes_of(test_db: &TestDb, world: &TwoTenants, tenant: TenantId) -> i64 {
    let scope = if tenant == world.a.tenant.id {
        world.a.scope()
    } else {
        world.b.scope()
    };
    let mut tx = test_db.db.begin_read(&scope).await.expect("begin");
    let n = count(
        &mut tx,
        "SELECT count(*) FROM notes WHERE tenant_id = $1",
        Some(tenant),
    )
    .await;
    tx.commit().await.expect("commit");
    n
}

async fn a_tenant_row_is_written_and_seen_inside_the_tenant_only(test_db: TestDb) {
    let postgres = test_db.backend() == Backend::Postgres;
    let world = TwoTenants::create(&test_db.db).await;
    let (a, b) = (world.a.tenant.id, world.b.tenant.id);
    // B already has a note and an outbox message (a table open to the system).
    let mut tx = test_db.db.begin(&world.b.scope()).await.expect("begin B");
    insert_note(&mut tx, b, "of B").await.expect("B's note");
    tx.outbox("test.topic", &serde_json::json!({"of": "B"}))
        .await
        .expect("B's message");
    tx.commit().await.expect("commit B");

    let mut tx = test_db.db.begin_system().await.expect("begin system");
    // The system sees B's outbox message (system access), but no notes (tenant only).
    let outbox_of_b = "SELECT count(*) FROM outbox WHERE tenant_id = $1";
    assert_eq!(count(&mut tx, outbox_of_b, Some(b)).await, 1);
    let all_notes = "SELECT count(*) FROM notes";
    assert_eq!(
        count(&mut tx, all_notes, None).await,
        if postgres { 0 } else { 1 },
        "a system transaction sees no tenant-only rows on PostgreSQL"
    );

    let mut in_a = tx.in_tenant(a).await.expect("in A");
    assert_eq!(in_a.tenant_id(), a);
    insert_note(&mut in_a, a, "written by the system in A")
        .await
        .expect("A's row is writable inside A");
    let notes_of_a = "SELECT count(*) FROM notes WHERE tenant_id = $1";
    assert_eq!(
        count(&mut in_a, notes_of_a, Some(a)).await,
        1,
        "and visible"
    );
    if postgres {
        // Every other tenant's rows are hidden, even when asked for by id, and even in a
        // table the system itself may read.
        assert_eq!(count(&mut in_a, all_notes, None).await, 1);
        assert_eq!(count(&mut in_a, notes_of_a, Some(b)).await, 0);
        assert_eq!(count(&mut in_a, outbox_of_b, Some(b)).await, 0);
    } else {
        // SQLite has no row-level security: as with a TenantTx, statements filter by
        // `tenant_id()` themselves.
        assert_eq!(count(&mut in_a, all_notes, None).await, 2);
    }
    in_a.leave().await.expect("leave A");

    // Back to no tenant: tenant-only rows read as empty again, system tables as before.
    assert_eq!(
        count(&mut tx, all_notes, None).await,
        if postgres { 0 } else { 2 },
        "after leave, the system transaction is in no tenant again"
    );
    assert_eq!(count(&mut tx, outbox_of_b, Some(b)).await, 1);
    assert!(!tx.is_aborted());
    tx.commit().await.expect("commit system");

    assert_eq!(notes_of(&test_db, &world, a).await, 1, "committed with it");
    assert_eq!(notes_of(&test_db, &world, b).await, 1, "B's note untouched");
}

/// PostgreSQL's `WITH CHECK`: acting in A, the system cannot write a row of B.
async fn inside_a_tenant_another_tenants_row_is_refused(test_db: TestDb) {
    let world = TwoTenants::create(&test_db.db).await;
    let (a, b) = (world.a.tenant.id, world.b.tenant.id);
    let mut tx = test_db.db.begin_system().await.expect("begin system");
    let mut in_a = tx.in_tenant(a).await.expect("in A");
    let written = insert_note(&mut in_a, b, "for B, from inside A").await;
    if test_db.backend() == Backend::Postgres {
        assert!(written.is_err(), "row-level security refuses B's row in A");
        drop(in_a);
        assert!(matches!(tx.commit().await, Err(Error::Aborted)));
        assert_eq!(notes_of(&test_db, &world, b).await, 0);
    } else {
        // No row-level security on SQLite: the caller's own filter is the only guard.
        written.expect("SQLite enforces nothing");
        in_a.leave().await.expect("leave");
        tx.commit().await.expect("commit");
        assert_eq!(notes_of(&test_db, &world, b).await, 1);
    }
}

/// Dropped without `leave` (an early return), the handle poisons the system transaction:
/// the commit refuses and nothing of it is written.
async fn a_handle_dropped_without_leave_poisons_the_system_transaction(test_db: TestDb) {
    let world = TwoTenants::create(&test_db.db).await;
    let a = world.a.tenant.id;
    let mut tx = test_db.db.begin_system().await.expect("begin system");
    {
        let mut in_a = tx.in_tenant(a).await.expect("in A");
        insert_note(&mut in_a, a, "never committed")
            .await
            .expect("written in A");
        // Dropped here, without leave().
    }
    assert!(tx.is_aborted(), "the system transaction knows it");
    assert!(
        matches!(tx.commit().await, Err(Error::Aborted)),
        "the commit fails loudly"
    );
    assert_eq!(
        notes_of(&test_db, &world, a).await,
        0,
        "nothing was written"
    );

    // With leave, the same work commits (the poisoning is the drop's alone).
    let mut tx = test_db.db.begin_system().await.expect("begin system");
    let mut in_a = tx.in_tenant(a).await.expect("in A");
    insert_note(&mut in_a, a, "committed").await.expect("write");
    in_a.leave().await.expect("leave");
    tx.commit().await.expect("commit");
    assert_eq!(notes_of(&test_db, &world, a).await, 1);
}

tenantkit_core::backend_tests!(
    fixture = db;
    a_tenant_row_is_written_and_seen_inside_the_tenant_only,
    inside_a_tenant_another_tenants_row_is_refused,
    a_handle_dropped_without_leave_poisons_the_system_transaction;
);
