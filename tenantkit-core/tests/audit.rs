//! The audit log on both backends: the chain verifies, and an edited, deleted or reordered
//! row is detected and named. On PostgreSQL the application role cannot change history.

use sqlx::{Connection, Executor};
use tenantkit_core::testing::{TestDb, TwoTenants};
use tenantkit_core::{AuditEvent, Backend, Database, Migrations, TenantId, TenantScope};

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
    tx.verify_audit_chain().await.expect("verify")
}

/// Runs `sql` (with `$1` = the tenant) as the table owner, as an attacker with database access
/// would. On PostgreSQL the owner is subject to RLS too, so it sets the tenant first.
async fn tamper(test_db: &TestDb, tenant: TenantId, sql: &str) {
    match test_db.db.backend() {
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
        _ => {
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

tenantkit_core::backend_tests!(
    fixture = db;
    chain_verifies_and_tampering_is_named,
    an_aborted_change_leaves_no_audit_row,
);

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
    ] {
        let err = conn.execute(statement).await.expect_err(statement);
        assert!(
            err.to_string().contains("permission denied"),
            "{statement}: {err}"
        );
    }
}
