//! The database session store on both backends: a live rotation writes exactly the successor
//! and the session's touch, a token of a revoked session never rotates, and sessions are
//! tenant rows (on PostgreSQL, behind row-level security).

use std::time::Duration;

use tenantkit_auth::{AuthMethods, SessionRecord, SessionStore};
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

/// The one-statement rotation (SQLite: the trigger of migration 2005; PostgreSQL: one CTE):
/// the successor is the next generation, the session is touched, what comes back is what is
/// stored, and a spent, idle or revoked token writes nothing.
async fn a_live_rotation_writes_the_successor_and_touches_the_session(test_db: TestDb) {
    let db = &test_db.db;
    let world = TwoTenants::create(db).await;
    let start = now();
    let session = SessionRecord::new(
        world.a.owner.id,
        world.a.tenant.id,
        start,
        start + Duration::from_secs(3600),
    );
    let (first, second, third) = (
        b"first-token-hash-0123456789abcdef",
        b"second-token-hash-0123456789abcde",
        b"third-token-hash-0123456789abcdef",
    );
    db.create(&session, first).await.expect("create");
    let at = start + Duration::from_secs(60);
    let idle_since = start - Duration::from_secs(60);
    let rotated = db
        .rotate_live(first, second, at, idle_since)
        .await
        .expect("rotate")
        .expect("a live token rotates");
    let stored = db
        .session(session.id)
        .await
        .expect("session")
        .expect("exists");
    assert_eq!(rotated, stored, "the answer is the stored session");
    assert_eq!(
        (stored.id, stored.last_used_at, stored.created_at),
        (session.id, at, session.created_at)
    );
    let (old, _) = db.find(first).await.expect("find").expect("kept");
    assert_eq!((old.generation, old.rotated_at), (1, Some(at)));
    let (next, of) = db.find(second).await.expect("find").expect("successor");
    assert_eq!(
        (
            next.session_id,
            next.generation,
            next.created_at,
            next.rotated_at
        ),
        (session.id, 2, at, None)
    );
    assert_eq!(of, stored);

    // A spent token: nothing rotates, no third row appears.
    let again = db
        .rotate_live(first, third, at, idle_since)
        .await
        .expect("rotate");
    assert_eq!(again, None);
    assert!(db.find(third).await.expect("find").is_none());
    // Idle: last used before `idle_since`.
    let later = at + Duration::from_secs(60);
    assert_eq!(
        db.rotate_live(second, third, later, later)
            .await
            .expect("rotate"),
        None
    );
    assert!(db.find(third).await.expect("find").is_none());
    // Revoked.
    db.revoke(session.id, later, "logout")
        .await
        .expect("revoke");
    assert_eq!(
        db.rotate_live(second, third, later, idle_since)
            .await
            .expect("rotate"),
        None
    );
    assert!(db.find(third).await.expect("find").is_none());
    let (unspent, _) = db.find(second).await.expect("find").expect("kept");
    assert_eq!(unspent.rotated_at, None, "nothing was marked");
}

/// A session's `amr` is stored with it and read back by every read, including the SQLite
/// rotation's scalar subqueries and the PostgreSQL rotation's `RETURNING`; rotations never
/// change it (the successor token belongs to the same session row).
async fn a_sessions_amr_is_kept_by_every_read_and_rotation(test_db: TestDb) {
    let db = &test_db.db;
    let world = TwoTenants::create(db).await;
    let start = now();
    let amr = AuthMethods::new(["pwd", "otp"]);
    let session = SessionRecord::new(
        world.a.owner.id,
        world.a.tenant.id,
        start,
        start + Duration::from_secs(3600),
    )
    .with_amr(amr.clone());
    let (first, second, third) = (
        b"amr-first-hash-0123456789abcdefgh",
        b"amr-second-hash-0123456789abcdefg",
        b"amr-third-hash-0123456789abcdefgh",
    );
    assert!(db.create(&session, first).await.expect("create"));
    let read = |what| async move {
        let stored = db
            .session(session.id)
            .await
            .expect("session")
            .expect("exists");
        assert_eq!(stored.amr.as_slice(), ["pwd", "otp"], "{what}");
    };
    read("created").await;
    let (_, found) = db.find(first).await.expect("find").expect("known");
    assert_eq!(found.amr, amr);
    let at = start + Duration::from_secs(10);
    let rotated = db
        .rotate_live(first, second, at, start - Duration::from_secs(60))
        .await
        .expect("rotate")
        .expect("live");
    assert_eq!(rotated.amr, amr, "the one-statement rotation answers it");
    read("after the live rotation").await;
    assert!(db.rotate(second, third, at).await.expect("rotate"));
    read("after the two-step rotation").await;
    let (_, of_third) = db.find(third).await.expect("find").expect("successor");
    assert_eq!(of_third.amr, amr, "the successor's session");
    // A session without methods reads back as none.
    let bare = SessionRecord::new(world.a.owner.id, world.a.tenant.id, start, at);
    db.create(&bare, b"amr-bare-hash-0123456789abcdefghi")
        .await
        .expect("create");
    let stored = db.session(bare.id).await.expect("session").expect("exists");
    assert!(stored.amr.is_empty());
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
    a_live_rotation_writes_the_successor_and_touches_the_session,
    a_revoked_sessions_token_never_rotates,
    a_sessions_amr_is_kept_by_every_read_and_rotation,
    sessions_are_tenant_rows,
);
