//! The audit log on both backends: the chain verifies, and an edited, deleted or reordered
//! row is detected and named. On PostgreSQL the application role cannot change history.

use sqlx::Connection;
use tenantkit_core::testing::{TestDb, TwoTenants};
use tenantkit_core::{
    AuditEvent, AuditKey, Backend, ChainHead, ChainProblem, Database, Migrations, TenantId,
    TenantScope,
};

async fn append(db: &Database, tenant: TenantId, actions: &[&str]) {
    let mut tx = db
        .begin(&TenantScope::for_system(tenant))
        .await
        .expect("begin");
    for action in actions {
        let mut event = AuditEvent::new(*action);
        event.ip = Some("203.0.113.9".into());
        event.details = serde_json::json!({"n": action.len()});
        tx.audit(event).await.expect("audit");
    }
    tx.commit().await.expect("commit");
}

async fn verify(db: &Database, tenant: TenantId) -> Option<(i64, &'static str)> {
    let mut tx = db
        .begin_read(&TenantScope::for_system(tenant))
        .await
        .expect("begin");
    tx.verify_audit_chain(None, None)
        .await
        .expect("verify")
        .map(|problem| (problem.seq(), problem.describe()))
}

/// Runs `sql` (with `$1` = the tenant) as the table owner, as an attacker with database access
/// would. On PostgreSQL the owner is subject to RLS too, so it sets the tenant first.
async fn tamper(test_db: &TestDb, tenant: TenantId, sql: &str) {
    match test_db.db.backend() {
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&test_db.owner_url)
                .await
                .expect("connect");
            sqlx::query(sql)
                .bind(tenant)
                .execute(&mut conn)
                .await
                .expect(sql);
        }
        #[cfg(feature = "postgres")]
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&test_db.owner_url)
                .await
                .expect("connect");
            let mut tx = conn.begin().await.expect("begin");
            sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
                .bind(tenant.to_string())
                .execute(&mut *tx)
                .await
                .expect("set tenant");
            sqlx::query(sql)
                .bind(tenant)
                .execute(&mut *tx)
                .await
                .expect(sql);
            tx.commit().await.expect("commit");
        }
        other => unreachable!("{other} is not compiled"),
    }
}

async fn db(backend: Backend) -> Option<TestDb> {
    TestDb::new(backend, &Migrations::new()).await
}

async fn chain_verifies_and_tampering_is_named(test_db: TestDb) {
    let db = &test_db.db;
    let world = TwoTenants::create(db).await;
    let (a, b) = (world.a.tenant.id, world.b.tenant.id);
    append(
        db,
        a,
        &[
            "auth.login",
            "project.created",
            "project.updated",
            "member.role_changed",
            "auth.logout",
        ],
    )
    .await;
    append(db, b, &["auth.login", "auth.login_failed"]).await;
    append(db, a, &["auth.refresh_reused"]).await;
    assert_eq!(verify(db, a).await, None);
    assert_eq!(verify(db, b).await, None);
    let mut tx = db
        .begin_read(&TenantScope::for_system(a))
        .await
        .expect("begin");
    let entries = tx.audit_entries(0, 100).await.expect("entries");
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6],
        "per-tenant sequence"
    );
    drop(tx);

    tamper(
        &test_db,
        a,
        "UPDATE audit_log SET action = 'nothing.happened' WHERE tenant_id = $1 AND seq = 3",
    )
    .await;
    assert_eq!(verify(db, a).await, Some((3, "content was changed")));
    assert_eq!(
        verify(db, b).await,
        None,
        "other tenants' chains are independent"
    );

    tamper(
        &test_db,
        b,
        "DELETE FROM audit_log WHERE tenant_id = $1 AND seq = 1",
    )
    .await;
    assert_eq!(verify(db, b).await, Some((1, "missing or reordered entry")));

    // Reorder: swap two entries' positions (through a temporary sequence number).
    let fresh = TwoTenants::create(db).await.a.tenant.id;
    append(db, fresh, &["one", "two", "three"]).await;
    tamper(
        &test_db,
        fresh,
        "UPDATE audit_log SET seq = 100 WHERE tenant_id = $1 AND seq = 2",
    )
    .await;
    tamper(
        &test_db,
        fresh,
        "UPDATE audit_log SET seq = 2 WHERE tenant_id = $1 AND seq = 3",
    )
    .await;
    tamper(
        &test_db,
        fresh,
        "UPDATE audit_log SET seq = 3 WHERE tenant_id = $1 AND seq = 100",
    )
    .await;
    assert_eq!(
        verify(db, fresh).await,
        Some((2, "does not follow the previous entry"))
    );
}

async fn an_aborted_change_leaves_no_audit_row(test_db: TestDb) {
    let db = &test_db.db;
    let world = TwoTenants::create(db).await;
    let mut tx = db.begin(&world.a.scope()).await.expect("begin");
    tx.audit(AuditEvent::new("project.created"))
        .await
        .expect("audit");
    drop(tx); // rolled back with the change it recorded
    let mut tx = db.begin_read(&world.a.scope()).await.expect("begin");
    assert!(tx.audit_entries(0, 10).await.expect("entries").is_empty());
}

/// An append chains onto the real end of the chain whatever this handle remembers of it
/// (SQLite keeps each tenant's last head in memory): after a rolled-back append, after
/// another handle (another process) appended, and with several tenants interleaved.
async fn appends_chain_onto_the_real_end(test_db: TestDb) {
    let db = &test_db.db;
    let world = TwoTenants::create(db).await;
    let (a, b) = (world.a.tenant.id, world.b.tenant.id);
    append(db, a, &["one", "two"]).await;
    // Rolled back: the remembered head names an entry that was never committed.
    let mut tx = db.begin(&world.a.scope()).await.expect("begin");
    tx.audit(AuditEvent::new("rolled.back"))
        .await
        .expect("audit");
    drop(tx);
    append(db, a, &["three"]).await;
    append(db, b, &["other"]).await;
    // Another handle appends behind this one's back.
    let other = test_db.reconnect().await.expect("reconnect");
    append(&other, a, &["four", "five"]).await;
    append(db, a, &["six"]).await;
    append(&other, a, &["seven"]).await;
    append(db, a, &["eight"]).await;
    assert_eq!(verify(db, a).await, None);
    assert_eq!(verify(db, b).await, None);
    let mut tx = db.begin_read(&world.a.scope()).await.expect("begin");
    let entries = tx.audit_entries(0, 100).await.expect("entries");
    let actions: Vec<(i64, &str)> = entries
        .iter()
        .map(|entry| (entry.seq, entry.action.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            (1, "one"),
            (2, "two"),
            (3, "three"),
            (4, "four"),
            (5, "five"),
            (6, "six"),
            (7, "seven"),
            (8, "eight")
        ]
    );
    other.close().await;
}

const KEY: &[u8] = b"audit-anchor-key-for-tests-only-0123456789";

async fn verify_with(
    db: &Database,
    tenant: TenantId,
    key: Option<&AuditKey>,
    checkpoint: Option<&ChainHead>,
) -> Option<ChainProblem> {
    let mut tx = db
        .begin_read(&TenantScope::for_system(tenant))
        .await
        .expect("begin");
    tx.verify_audit_chain(key, checkpoint)
        .await
        .expect("verify")
}

async fn a_rewritten_chain_fails_its_anchors(test_db: TestDb) {
    let key = AuditKey::new(KEY).expect("key");
    let db = test_db.db.clone().with_audit_key(key.clone());
    let world = TwoTenants::create(&db).await;
    let a = world.a.tenant.id;
    append(
        &db,
        a,
        &["auth.login", "member.role_changed", "auth.logout"],
    )
    .await;
    assert_eq!(verify_with(&db, a, Some(&key), None).await, None);
    // Someone with write access to the database (but not the key) rewrites entry 2 and
    // recomputes every hash after it: the plain hash chain is consistent again...
    let mut tx = db
        .begin_read(&TenantScope::for_system(a))
        .await
        .expect("begin");
    let mut entries = tx.audit_entries(0, 10).await.expect("entries");
    drop(tx);
    entries[1].action = "nothing.happened".into();
    for i in 1..entries.len() {
        entries[i].prev_hash = entries[i - 1].hash.clone();
        entries[i].hash = entries[i].expected_hash(a);
    }
    for entry in &entries[1..] {
        let hex: String = entry.hash.iter().map(|b| format!("{b:02x}")).collect();
        let prev: String = entry.prev_hash.iter().map(|b| format!("{b:02x}")).collect();
        let (hash_sql, prev_sql) = match test_db.backend() {
            Backend::Sqlite => (format!("X'{hex}'"), format!("X'{prev}'")),
            _ => (format!("'\\x{hex}'::bytea"), format!("'\\x{prev}'::bytea")),
        };
        tamper(
            &test_db,
            a,
            &format!(
                "UPDATE audit_log SET action = '{}', hash = {hash_sql}, prev_hash = {prev_sql} \
                 WHERE tenant_id = $1 AND seq = {}",
                entry.action, entry.seq
            ),
        )
        .await;
    }
    assert_eq!(
        verify_with(&db, a, None, None).await,
        None,
        "without the key, a recomputed chain looks intact"
    );
    // ...but its anchors are not the key's.
    assert_eq!(
        verify_with(&db, a, Some(&key), None).await,
        Some(ChainProblem::Unanchored(2))
    );
    // Anchors stripped from the rewritten part do not help either.
    tamper(
        &test_db,
        a,
        "UPDATE audit_log SET anchor = NULL WHERE tenant_id = $1 AND seq >= 2",
    )
    .await;
    assert_eq!(
        verify_with(&db, a, Some(&key), None).await,
        Some(ChainProblem::Unanchored(2))
    );
}

async fn a_cut_tail_is_found_with_a_checkpoint(test_db: TestDb) {
    let key = AuditKey::new(KEY).expect("key");
    let db = test_db.db.clone().with_audit_key(key.clone());
    let world = TwoTenants::create(&db).await;
    let a = world.a.tenant.id;
    append(&db, a, &["one", "two", "three"]).await;
    let head = {
        let mut tx = db
            .begin_read(&TenantScope::for_system(a))
            .await
            .expect("begin");
        tx.audit_head().await.expect("head")
    };
    assert_eq!(head.seq, 3);
    append(&db, a, &["four"]).await;
    assert_eq!(verify_with(&db, a, Some(&key), Some(&head)).await, None);
    // The last two entries are deleted: the rest is a valid, anchored prefix...
    tamper(
        &test_db,
        a,
        "DELETE FROM audit_log WHERE tenant_id = $1 AND seq >= 3",
    )
    .await;
    assert_eq!(verify_with(&db, a, Some(&key), None).await, None);
    // ...which no longer reaches the checkpoint kept outside the database.
    assert_eq!(
        verify_with(&db, a, Some(&key), Some(&head)).await,
        Some(ChainProblem::Truncated { checkpoint_seq: 3 })
    );
}

async fn deleting_a_tenant_keeps_its_chain(test_db: TestDb) {
    let db = &test_db.db;
    let world = TwoTenants::create(db).await;
    let a = world.a.tenant.id;
    append(db, a, &["auth.login", "project.created"]).await;
    // The database refuses to drop a tenant with history, even as the owner.
    let err = {
        use sqlx::Connection as _;
        let sql = "DELETE FROM tenants WHERE id = $1";
        match test_db.backend() {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&test_db.owner_url)
                    .await
                    .expect("connect");
                sqlx::query("PRAGMA foreign_keys = ON")
                    .execute(&mut conn)
                    .await
                    .expect("pragma");
                sqlx::query(sql).bind(a).execute(&mut conn).await.map(drop)
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&test_db.owner_url)
                    .await
                    .expect("connect");
                let mut tx = conn.begin().await.expect("begin");
                sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
                    .bind(a.to_string())
                    .execute(&mut *tx)
                    .await
                    .expect("set");
                sqlx::query(sql).bind(a).execute(&mut *tx).await.map(drop)
            }
            other => unreachable!("{other} is not compiled"),
        }
    };
    let err = err.expect_err("a tenant with an audit chain cannot be deleted");
    // (SQLite reports a RESTRICT action as a trigger constraint, code 1811.)
    assert!(
        err.as_database_error().is_some_and(|e| {
            e.is_foreign_key_violation() || e.message().contains("FOREIGN KEY constraint failed")
        }),
        "{err}"
    );
    // The explicit deletion: members gone, the row and the chain kept, and audited.
    let mut tx = db.begin(&TenantScope::for_system(a)).await.expect("begin");
    let deleted = tx
        .delete_tenant(AuditEvent::new("tenant.deleted"))
        .await
        .expect("delete");
    tx.commit().await.expect("commit");
    assert!(deleted.deleted_at.is_some());
    assert!(
        db.memberships_of(world.a.owner.id)
            .await
            .expect("memberships")
            .is_empty()
    );
    assert_eq!(verify(db, a).await, None);
    let mut tx = db
        .begin_read(&TenantScope::for_system(a))
        .await
        .expect("begin");
    let actions: Vec<String> = tx
        .audit_entries(0, 10)
        .await
        .expect("entries")
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["auth.login", "project.created", "tenant.deleted"]);
    drop(tx);
    let mut tx = db.begin(&TenantScope::for_system(a)).await.expect("begin");
    assert!(
        matches!(
            tx.delete_tenant(AuditEvent::new("tenant.deleted")).await,
            Err(tenantkit_core::Error::NotFound)
        ),
        "a tenant is deleted once"
    );
}

tenantkit_core::backend_tests!(
    fixture = db;
    chain_verifies_and_tampering_is_named,
    an_aborted_change_leaves_no_audit_row,
    appends_chain_onto_the_real_end,
    a_rewritten_chain_fails_its_anchors,
    a_cut_tail_is_found_with_a_checkpoint,
    deleting_a_tenant_keeps_its_chain,
);

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_app_role_cannot_rewrite_history() {
    let Some(test_db) = db(Backend::Postgres).await else {
        return;
    };
    let world = TwoTenants::create(&test_db.db).await;
    append(&test_db.db, world.a.tenant.id, &["auth.login"]).await;
    let mut conn = sqlx::PgConnection::connect(&test_db.app_url)
        .await
        .expect("connect as app");
    for statement in [
        "UPDATE audit_log SET action = 'x'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        // Nor can it wipe a chain by deleting its tenant.
        "DELETE FROM tenants",
        "TRUNCATE tenants CASCADE",
    ] {
        let err = sqlx::Executor::execute(&mut conn, statement)
            .await
            .expect_err(statement);
        assert!(
            err.to_string().contains("permission denied"),
            "{statement}: {err}"
        );
    }
}
