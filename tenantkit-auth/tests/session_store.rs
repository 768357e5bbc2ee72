//! The database session store on both backends: a token of a revoked session never rotates,
//! and sessions are tenant rows (on PostgreSQL, behind row-level security).

use std::time::Duration;

use tenantkit_auth::{SessionRecord, SessionStore};
use tenantkit_core::testing::{TestDb, TwoTenants};
use tenantkit_core::{Backend, Migrations, now};

async fn db(backend: Backend) -> Option<TestDb> {
    TestDb::new(
        backend,
        &Migrations::new().with(tenantkit_auth::migrations()),
    )
    .await
}

async fn a_revoked_sessions_token_never_rotates(test_db: TestDb) {
    let db = &test_db.db;
    let world = TwoTenants::create(db).await;
    let at = now();
    let session = SessionRecord::new(
        world.a.owner.id,
        world.a.tenant.id,
        at,
        at + Duration::from_secs(3600),
    );
    db.create(&session, b"first-token-hash-0123456789abcdef")
        .await
        .expect("create");
    // Revoked between a refresh's read and its write (logout, reuse detection elsewhere).
    db.revoke(session.id, at, "logout").await.expect("revoke");
    let rotated = db
        .rotate(
            b"first-token-hash-0123456789abcdef",
            b"second-token-hash-0123456789abcde",
            at,
        )
        .await
        .expect("rotate");
    assert!(!rotated, "no successor for a revoked session");
    assert!(
        db.find(b"second-token-hash-0123456789abcde")
            .await
            .expect("find")
            .is_none()
    );
    let stored = db
        .session(session.id)
        .await
        .expect("session")
        .expect("exists");
    assert!(stored.revoked_at.is_some());
}

async fn sessions_are_tenant_rows(test_db: TestDb) {
    let db = &test_db.db;
    let world = TwoTenants::create(db).await;
    let at = now();
    for (tenant, user) in [
        (world.a.tenant.id, world.a.owner.id),
        (world.b.tenant.id, world.b.owner.id),
    ] {
        let session = SessionRecord::new(user, tenant, at, at + Duration::from_secs(3600));
        db.create(&session, session.id.as_uuid().as_bytes())
            .await
            .expect("create");
    }
    if test_db.backend() == Backend::Postgres {
        tenantkit_core::testing::assert_rls_hides(&test_db, &world, "sessions").await;
    }
}

tenantkit_core::backend_tests!(
    fixture = db;
    a_revoked_sessions_token_never_rotates,
    sessions_are_tenant_rows,
);
