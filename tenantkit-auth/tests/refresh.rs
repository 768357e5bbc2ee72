//! Refresh-session behaviour, one suite over every store: memory, SQLite, PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use tenantkit_auth::{
    Error, MemorySessionStore, RefreshConfig, RefreshSessions, RefreshToken, SessionStore,
};
use tenantkit_core::testing::{TestDb, TwoTenants};
use tenantkit_core::{Backend, ManualClock, Migrations, TenantId, UserId};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-only";

/// A store plus a real user and tenant in it, and a movable clock.
struct Fixture<S> {
    sessions: RefreshSessions<S>,
    clock: Arc<ManualClock>,
    user: UserId,
    tenant: TenantId,
    _db: Option<TestDb>,
}

fn sessions<S: SessionStore>(store: S, clock: &Arc<ManualClock>) -> RefreshSessions<S> {
    RefreshSessions::with_clock(store, SECRET, RefreshConfig::default(), clock.clone())
        .expect("sessions")
}

async fn memory() -> Option<Fixture<MemorySessionStore>> {
    let clock = Arc::new(ManualClock::starting_now());
    Some(Fixture {
        sessions: sessions(MemorySessionStore::new(), &clock),
        clock,
        user: UserId::new(),
        tenant: TenantId::new(),
        _db: None,
    })
}

async fn database(backend: Backend) -> Option<Fixture<tenantkit_core::Database>> {
    let migrations = Migrations::new().with(tenantkit_auth::migrations());
    let test_db = TestDb::new(backend, &migrations).await?;
    let world = TwoTenants::create(&test_db.db).await;
    let clock = Arc::new(ManualClock::starting_now());
    Some(Fixture {
        sessions: sessions(test_db.db.clone(), &clock),
        clock,
        user: world.a.owner.id,
        tenant: world.a.tenant.id,
        _db: Some(test_db),
    })
}

mod suite {
    use super::*;

    pub(crate) async fn rotation_issues_a_new_token_each_time<S: SessionStore>(f: Fixture<S>) {
        let (session, t0) = f.sessions.start(f.user, f.tenant, 0).await.expect("start");
        assert_eq!((session.user_id, session.tenant_id), (f.user, f.tenant));
        let (same, t1) = f.sessions.refresh(&t0).await.expect("refresh");
        assert_eq!(same.id, session.id, "same family");
        assert_ne!(t1, t0);
        f.clock.advance(Duration::from_secs(60));
        let (_, t2) = f.sessions.refresh(&t1).await.expect("refresh again");
        assert!(t2 != t1 && t2 != t0);
        assert_eq!(t0.expose().len(), 43, "256 bits, base64url");
    }

    pub(crate) async fn replay_after_the_grace_window_revokes_the_family<S: SessionStore>(
        f: Fixture<S>,
    ) {
        let (session, t0) = f.sessions.start(f.user, f.tenant, 0).await.expect("start");
        let (_, t1) = f.sessions.refresh(&t0).await.expect("refresh");
        f.clock.advance(Duration::from_secs(6));
        match f.sessions.refresh(&t0).await {
            Err(Error::RefreshTokenReused {
                session: revoked, ..
            }) => assert_eq!(revoked, session.id),
            other => panic!("expected reuse detection, got {other:?}"),
        }
        // The thief's copy and the legitimate successor are both dead now.
        assert!(
            matches!(f.sessions.refresh(&t1).await, Err(Error::InvalidToken(_))),
            "successor revoked"
        );
        assert!(matches!(
            f.sessions.refresh(&t0).await,
            Err(Error::InvalidToken(_))
        ));
    }

    pub(crate) async fn within_the_grace_window_the_same_successor_is_returned<S: SessionStore>(
        f: Fixture<S>,
    ) {
        let (_, t0) = f.sessions.start(f.user, f.tenant, 0).await.expect("start");
        let (_, first) = f.sessions.refresh(&t0).await.expect("refresh");
        f.clock.advance(Duration::from_secs(4));
        let (_, second) = f.sessions.refresh(&t0).await.expect("retry inside grace");
        assert_eq!(
            first, second,
            "a lost response can be retried without forking the session"
        );
        assert!(f.sessions.refresh(&first).await.is_ok());
    }

    pub(crate) async fn a_spent_token_cannot_walk_past_a_rotated_successor<S: SessionStore>(
        f: Fixture<S>,
    ) {
        let (_, t0) = f.sessions.start(f.user, f.tenant, 0).await.expect("start");
        let (_, t1) = f.sessions.refresh(&t0).await.expect("rightful refresh");
        let (_, t2) = f.sessions.refresh(&t1).await.expect("the client moves on");
        // Still inside t0's grace window, a thief replays t0: t1 is already spent, so t0
        // must not hand it out again; the replay is reuse and ends the family.
        f.clock.advance(Duration::from_secs(1));
        assert!(matches!(
            f.sessions.refresh(&t0).await,
            Err(Error::RefreshTokenReused { .. })
        ));
        assert!(
            f.sessions.refresh(&t2).await.is_err(),
            "the whole family is revoked"
        );
    }

    pub(crate) async fn concurrent_refreshes_yield_one_live_branch<S: SessionStore>(f: Fixture<S>) {
        let (_, t0) = f.sessions.start(f.user, f.tenant, 0).await.expect("start");
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (sessions, token) = (f.sessions.clone(), t0.clone());
            tasks.push(tokio::spawn(async move { sessions.refresh(&token).await }));
        }
        let mut successors = Vec::new();
        for task in tasks {
            successors.push(task.await.expect("join").expect("every racer succeeds").1);
        }
        successors.dedup();
        assert_eq!(
            successors.len(),
            1,
            "one successor for all concurrent refreshes"
        );
        // And that successor is the only live branch: it rotates normally.
        f.clock.advance(Duration::from_secs(10));
        assert!(f.sessions.refresh(&successors[0]).await.is_ok());
    }

    pub(crate) async fn idle_and_absolute_expiry_end_sessions<S: SessionStore>(f: Fixture<S>) {
        let (_, idle) = f.sessions.start(f.user, f.tenant, 0).await.expect("start");
        f.clock.advance(Duration::from_secs(7 * 24 * 3600 + 1));
        assert!(
            matches!(f.sessions.refresh(&idle).await, Err(Error::InvalidToken(_))),
            "idle expiry"
        );

        let (_, mut token) = f.sessions.start(f.user, f.tenant, 0).await.expect("start");
        for _day in 0..29 {
            f.clock.advance(Duration::from_secs(24 * 3600));
            token = f
                .sessions
                .refresh(&token)
                .await
                .expect("daily use keeps it alive")
                .1;
        }
        f.clock.advance(Duration::from_secs(24 * 3600));
        assert!(
            matches!(
                f.sessions.refresh(&token).await,
                Err(Error::InvalidToken(_))
            ),
            "absolute expiry at 30 days"
        );
    }

    pub(crate) async fn logout_and_logout_everywhere_revoke<S: SessionStore>(f: Fixture<S>) {
        let (_, laptop) = f.sessions.start(f.user, f.tenant, 0).await.expect("start");
        let (_, phone) = f.sessions.start(f.user, f.tenant, 0).await.expect("start");
        let (_, tablet) = f.sessions.start(f.user, f.tenant, 0).await.expect("start");
        assert!(f.sessions.revoke(&laptop).await.expect("logout").is_some());
        assert!(matches!(
            f.sessions.refresh(&laptop).await,
            Err(Error::InvalidToken(_))
        ));
        assert!(
            f.sessions.refresh(&phone).await.is_ok(),
            "other sessions live on"
        );
        assert_eq!(
            f.sessions
                .revoke_user(f.user, "logout_all")
                .await
                .expect("revoke all"),
            2
        );
        assert!(f.sessions.refresh(&tablet).await.is_err());
        assert!(
            f.sessions
                .revoke(&RefreshToken::new("never-issued"))
                .await
                .expect("quiet")
                .is_none()
        );
    }

    pub(crate) async fn derived_sessions_never_outlive_their_parent<S: SessionStore>(
        f: Fixture<S>,
    ) {
        let (parent, _) = f.sessions.start(f.user, f.tenant, 0).await.expect("start");
        f.clock.advance(Duration::from_secs(10 * 24 * 3600));
        let (child, token) = f
            .sessions
            .start_until(f.user, f.tenant, 0, Some(parent.expires_at))
            .await
            .expect("derived");
        assert_eq!(
            child.expires_at, parent.expires_at,
            "the cap, not a fresh 30 days"
        );
        f.clock.advance(Duration::from_secs(20 * 24 * 3600));
        assert!(
            matches!(
                f.sessions.refresh(&token).await,
                Err(Error::InvalidToken(_))
            ),
            "ends with its parent"
        );
    }

    pub(crate) async fn unknown_and_garbage_tokens_are_invalid<S: SessionStore>(f: Fixture<S>) {
        for garbage in [
            "",
            "x",
            "eyJhbGciOiJIUzI1NiJ9.e30.sig",
            &"A".repeat(100_000),
        ] {
            assert!(matches!(
                f.sessions.refresh(&RefreshToken::new(garbage)).await,
                Err(Error::InvalidToken(_))
            ));
        }
        assert_eq!(
            format!("{:?}", RefreshToken::new("secret-value")),
            "RefreshToken(..)"
        );
    }
}

/// The suite over each store: the in-process memory store, and the database store on each
/// backend.
macro_rules! refresh_tests {
    ($($name:ident),* $(,)?) => {
        mod memory_store { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = super::memory().await.expect("memory store");
                super::suite::$name(fixture).await
            }
        )* }
        mod database_store {
            use super::*;
            $(
                async fn $name(fixture: Fixture<tenantkit_core::Database>) {
                    suite::$name(fixture).await
                }
            )*
            tenantkit_core::backend_tests!(fixture = database; $($name),*);
        }
    };
}

refresh_tests!(
    rotation_issues_a_new_token_each_time,
    replay_after_the_grace_window_revokes_the_family,
    within_the_grace_window_the_same_successor_is_returned,
    a_spent_token_cannot_walk_past_a_rotated_successor,
    concurrent_refreshes_yield_one_live_branch,
    idle_and_absolute_expiry_end_sessions,
    logout_and_logout_everywhere_revoke,
    derived_sessions_never_outlive_their_parent,
    unknown_and_garbage_tokens_are_invalid,
);

#[test]
fn a_short_secret_is_refused() {
    assert!(matches!(
        RefreshSessions::new(
            MemorySessionStore::new(),
            b"short",
            RefreshConfig::default()
        ),
        Err(Error::Key(_))
    ));
}
