//! Refresh-session behaviour, one suite over every store: memory, SQLite, PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use tenantkit_auth::{
    AuthMethods, Error, MemorySessionStore, RefreshConfig, RefreshSessions, RefreshToken,
    SessionStore,
};
use tenantkit_core::testing::{TestDb, TwoTenants};
use tenantkit_core::{Backend, ManualClock, Migrations, TenantId, UserId};

mod support;

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

    /// The sign-in's `amr` lives on the session: the fast rotation (one statement on each
    /// backend), the slow path (a twin inside the grace window), a later rotation, the stored
    /// row and a derived session (tenant switch) all keep it.
    pub(crate) async fn sign_in_methods_survive_rotation_and_derivation<S: SessionStore>(
        f: Fixture<S>,
    ) {
        let pwd = AuthMethods::password();
        let (session, t0) = f
            .sessions
            .start_signed_in(f.user, f.tenant, 0, pwd.clone())
            .await
            .expect("start");
        assert_eq!(session.amr.as_slice(), ["pwd"]);
        let (rotated, t1) = f.sessions.refresh(&t0).await.expect("refresh");
        assert_eq!(rotated.amr, pwd, "the live rotation keeps amr");
        let (twin, same) = f.sessions.refresh(&t0).await.expect("grace");
        assert_eq!((twin.amr, same), (pwd.clone(), t1.clone()), "the slow path");
        f.clock.advance(Duration::from_secs(60));
        let (later, _) = f.sessions.refresh(&t1).await.expect("refresh again");
        assert_eq!(later.amr, pwd);
        let stored = f
            .sessions
            .session(session.id)
            .await
            .expect("session")
            .expect("exists");
        assert_eq!(stored.amr, pwd);
        let (derived, d0) = f
            .sessions
            .start_derived(&stored, f.tenant)
            .await
            .expect("derive");
        assert_ne!(derived.id, session.id);
        assert_eq!(
            derived.amr, pwd,
            "a tenant switch keeps the sign-in's methods"
        );
        assert!(derived.expires_at <= stored.expires_at);
        let (derived_rotated, _) = f.sessions.refresh(&d0).await.expect("refresh");
        assert_eq!(derived_rotated.amr, pwd);
        let (plain, _) = f.sessions.start(f.user, f.tenant, 0).await.expect("start");
        assert!(
            plain.amr.is_empty(),
            "no methods unless the sign-in says so"
        );
        let several = AuthMethods::new(["pwd", "otp", "pwd", "mfa  hwk"]);
        assert_eq!(several.as_slice(), ["pwd", "otp", "mfa", "hwk"]);
        let (mfa, m0) = f
            .sessions
            .start_signed_in(f.user, f.tenant, 0, several.clone())
            .await
            .expect("start");
        assert_eq!(mfa.amr, several);
        assert_eq!(
            f.sessions.refresh(&m0).await.expect("refresh").0.amr,
            several
        );
    }

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
    sign_in_methods_survive_rotation_and_derivation,
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

/// Through the flows, on both backends: a password sign-in's tokens say `amr: ["pwd"]`, and
/// so does every token after a refresh or a tenant switch; the principal the JWT layers hand
/// to a handler carries the methods and the token's expiry.
mod sign_in_methods {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::{Request, Response, StatusCode, header};
    use http_body_util::Full;
    use tenantkit_auth::flows::{LoginRequest, SwitchTenant};
    use tenantkit_auth::{CachedSessionCheck, JwtAuthLayer, Password, StrictJwtAuthLayer};
    use tenantkit_core::{NewTenant, Principal, Role};
    use tower::{Layer, Service, ServiceExt as _, service_fn};

    use super::*;

    use super::support::{self, Flows, PASSWORD};

    /// What a handler behind `layer` sees of the caller: its amr and expiry.
    async fn seen_through<L>(layer: L, token: &str) -> (Vec<String>, i64)
    where
        L: Layer<
            tower::util::ServiceFn<
                fn(
                    Request<Full<Bytes>>,
                )
                    -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>,
            >,
        >,
        L::Service:
            Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible>,
    {
        fn handler(
            request: Request<Full<Bytes>>,
        ) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
            let principal = request.extensions().get::<Principal>().cloned();
            let body = principal.map_or_else(String::new, |p| {
                format!(
                    "{} {}",
                    p.expires_at().map_or(0, |at| at.unix_timestamp()),
                    p.amr().join(" ")
                )
            });
            std::future::ready(Ok(Response::new(Full::from(body))))
        }
        let service = layer.layer(service_fn(
            handler
                as fn(
                    Request<Full<Bytes>>,
                )
                    -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>,
        ));
        let request = Request::builder()
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Full::default())
            .expect("request");
        let response = service.oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("body")
            .to_bytes();
        let text = String::from_utf8(body.to_vec()).expect("utf8");
        let mut words = text.split(' ');
        let exp = words.next().expect("exp").parse().expect("number");
        (words.map(str::to_owned).collect(), exp)
    }

    fn amr_of(f: &Flows, token: &str) -> Vec<String> {
        f.flows
            .tokens()
            .verify(token)
            .expect("verify")
            .amr()
            .to_vec()
    }

    async fn password_sign_ins_carry_pwd_through_refresh_and_switch(f: Flows) {
        let signed_up = f.signed_up("amr@example.com", "Amr").await;
        assert_eq!(
            amr_of(&f, &signed_up.tokens.access_token),
            ["pwd"],
            "signup"
        );

        let logged_in = f
            .flows
            .login(
                &f.client,
                LoginRequest {
                    email: "amr@example.com".into(),
                    password: Password::new(PASSWORD),
                    tenant: None,
                },
            )
            .await
            .expect("login")
            .into_complete()
            .expect("no second factor");
        let access = &logged_in.tokens.access_token;
        assert_eq!(amr_of(&f, access), ["pwd"], "login");
        let principal = f.flows.tokens().verify(access).expect("verify");
        let expires_at = principal.expires_at().expect("a token's principal expires");
        let claims = f.flows.tokens().verify_claims(access).expect("claims");
        assert_eq!(expires_at.unix_timestamp(), claims.exp);
        assert_eq!(claims.amr, ["pwd"]);
        assert!(principal.has_amr(tenantkit_core::amr::PASSWORD));
        assert!(!principal.has_amr(tenantkit_core::amr::OTP));

        // Both layers hand the handler the methods and the expiry.
        let plain = seen_through(JwtAuthLayer::new(f.flows.tokens().clone()), access).await;
        assert_eq!(plain, (vec!["pwd".to_owned()], claims.exp));
        let strict = StrictJwtAuthLayer::new(
            f.flows.tokens().clone(),
            CachedSessionCheck::new(Arc::new(f.flows.sessions().clone())),
        );
        assert_eq!(
            seen_through(strict, access).await,
            (vec!["pwd".to_owned()], claims.exp),
            "the strict layer's current role keeps the sign-in's methods"
        );

        // A refresh: the rotated access token keeps the sign-in's methods.
        let refreshed = f
            .flows
            .refresh(
                &f.client,
                &RefreshToken::new(logged_in.tokens.refresh_token.clone()),
            )
            .await
            .expect("refresh");
        assert_eq!(amr_of(&f, &refreshed.access_token), ["pwd"], "refresh");
        let again = f
            .flows
            .refresh(
                &f.client,
                &RefreshToken::new(refreshed.refresh_token.clone()),
            )
            .await
            .expect("refresh again");
        assert_eq!(amr_of(&f, &again.access_token), ["pwd"], "second refresh");

        // A tenant switch, and a refresh of the switched session: still the sign-in's.
        let (other, mut tx) = f
            .flows
            .db()
            .create_tenant(NewTenant {
                name: "Second".into(),
                slug: None,
            })
            .await
            .expect("tenant");
        tx.add_member(signed_up.user.id, Role::Member)
            .await
            .expect("member");
        tx.commit().await.expect("commit");
        let switched = f
            .flows
            .switch_tenant(
                &f.client,
                &principal,
                SwitchTenant {
                    tenant_id: other.id.to_string(),
                },
            )
            .await
            .expect("switch");
        let in_other = f
            .flows
            .tokens()
            .verify(&switched.access_token)
            .expect("verify");
        assert_eq!(in_other.tenant_id(), other.id);
        assert_eq!(in_other.amr(), ["pwd"], "tenant switch");
        let switched_refreshed = f
            .flows
            .refresh(
                &f.client,
                &RefreshToken::new(switched.refresh_token.clone()),
            )
            .await
            .expect("refresh switched");
        assert_eq!(
            amr_of(&f, &switched_refreshed.access_token),
            ["pwd"],
            "refresh after a switch"
        );
    }

    async fn an_invitation_accepted_with_a_password_signs_in_with_pwd(f: Flows) {
        let owner = f.signed_up("owner@example.com", "Inviting").await;
        let owner = f
            .flows
            .tokens()
            .verify(&owner.tokens.access_token)
            .expect("verify");
        let (_, joined) = f.invite_and_accept(&owner, "joiner@example.com").await;
        assert_eq!(amr_of(&f, &joined.tokens.access_token), ["pwd"]);
        let refreshed = f
            .flows
            .refresh(
                &f.client,
                &RefreshToken::new(joined.tokens.refresh_token.clone()),
            )
            .await
            .expect("refresh");
        assert_eq!(amr_of(&f, &refreshed.access_token), ["pwd"]);
    }

    tenantkit_core::backend_tests!(
        fixture = support::flows;
        password_sign_ins_carry_pwd_through_refresh_and_switch,
        an_invitation_accepted_with_a_password_signs_in_with_pwd,
    );
}
