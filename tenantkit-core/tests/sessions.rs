//! Session storage on both backends: a token of a revoked session never rotates.

use tenantkit_core::testing::{TestDb, TwoTenants};
use tenantkit_core::{now, Backend, SessionId, SessionRecord};

async fn a_revoked_sessions_token_never_rotates(backend: Backend) {
    let Some(test_db) = TestDb::new(backend).await else {
        return;
    };
    let db = &test_db.db;
    let world = TwoTenants::create(db).await;
    let at = now();
    let session = SessionRecord {
        id: SessionId::new(),
        user_id: world.a.owner.id,
        tenant_id: world.a.tenant.id,
        created_at: at,
        last_used_at: at,
        expires_at: at + std::time::Duration::from_secs(3600),
        revoked_at: None,
    };
    db.create_session(&session, b"first-token-hash-0123456789abcdef")
        .await
        .expect("create");
    // Revoked between a refresh's read and its write (logout, reuse detection elsewhere).
    db.revoke_session(session.id, at, "logout")
        .await
        .expect("revoke");
    let rotated = db
        .rotate_refresh_token(
            b"first-token-hash-0123456789abcdef",
            b"second-token-hash-0123456789abcde",
            at,
        )
        .await
        .expect("rotate");
    assert!(!rotated, "no successor for a revoked session");
    assert!(db
        .find_refresh_token(b"second-token-hash-0123456789abcde")
        .await
        .expect("find")
        .is_none());
    assert!(db.session_is_over(session.id, at).await.expect("check"));
}

#[tokio::test]
async fn sqlite_a_revoked_sessions_token_never_rotates() {
    a_revoked_sessions_token_never_rotates(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_a_revoked_sessions_token_never_rotates() {
    a_revoked_sessions_token_never_rotates(Backend::Postgres).await;
}
