//! Test fixtures for tenantkit and for crates built on it: throwaway databases on each
//! backend, a two-tenant world, one macro that runs a test on every backend, and the isolation
//! conformance suite a tenant table must pass. Enabled by the `testing` feature; not for
//! production use.
//!
//! PostgreSQL tests read the superuser URL of a throwaway cluster from
//! `TENANTKIT_TEST_POSTGRES_URL` (the workspace's `scripts/test.sh` starts one and sets it).
//! Each test gets a fresh database owned by `tenantkit_owner`, migrated as that owner, and
//! used through `tenantkit_app_login`, a member of `tenantkit_app` that cannot bypass RLS.
//! Without the variable the PostgreSQL tests say they did not run, except under `CI=true`,
//! where a missing PostgreSQL is a failure.

use std::fmt;

pub mod fuzz;

use crate::{
    Backend, Database, DatabaseOptions, Email, Migrations, NewTenant, NewUser, Principal, Role,
    SessionId, Slug, Tenant, TenantScope, User,
};

/// The variable naming the PostgreSQL superuser URL for tests.
pub const POSTGRES_URL_VAR: &str = "TENANTKIT_TEST_POSTGRES_URL";

const OWNER_ROLE: &str = "tenantkit_owner";
const APP_LOGIN_ROLE: &str = "tenantkit_app_login";
const TEST_PASSWORD: &str = "tenantkit-test-only";

/// A migrated database that lives as long as the value.
pub struct TestDb {
    /// The application's handle (on PostgreSQL: the RLS-bound app role).
    pub db: Database,
    /// The URL the application connects with.
    pub app_url: String,
    /// The URL of the owner role that ran the migrations (equal to `app_url` on SQLite).
    pub owner_url: String,
    _dir: Option<tempfile::TempDir>,
}

impl fmt::Debug for TestDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDb")
            .field("backend", &self.db.backend())
            .finish_non_exhaustive()
    }
}

fn ci_requires_everything() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The value of `var`, which locates a service a test needs (a database URL, an SMTP sink, a
/// tool). When it is unset or empty: under `CI=true` (or `CI=1`) a panic, because CI runs
/// every test; otherwise a note on stderr that the tests needing `what` did NOT run (written
/// past the test harness's capture, so it is seen), and `None`.
///
/// # Panics
/// Under CI, when `var` is unset.
pub fn required_service(var: &str, what: &str) -> Option<String> {
    if let Some(value) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
        return Some(value);
    }
    assert!(
        !ci_requires_everything(),
        "CI=true but {var} is not set: {what} tests must run in CI (bash scripts/test.sh sets it)"
    );
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "note: {what} tests did NOT run: {var} is not set \
         (bash scripts/test.sh starts the service and sets it)"
    );
    None
}

impl TestDb {
    /// A fresh database on `backend` with `migrations` applied; `None` (after saying so on
    /// stderr) when the backend is not available outside CI.
    ///
    /// # Panics
    /// When the database cannot be set up, or PostgreSQL is missing under `CI=true`.
    pub async fn new(backend: Backend, migrations: &Migrations) -> Option<TestDb> {
        let mut test_db = Self::empty(backend).await?;
        test_db.migrate_as_owner(migrations).await;
        // With the schema in place, the application's own start-up checks (on PostgreSQL: an
        // RLS-safe role, every tenant table behind RLS) must pass.
        test_db.db = test_db
            .reconnect()
            .await
            .expect("connect as the application, with every start-up check");
        Some(test_db)
    }

    /// A fresh database on `backend` with no migration applied (to test upgrades); `None`
    /// when the backend is not available outside CI. On PostgreSQL its `db` skipped the
    /// start-up checks (there is no schema to check yet): call [`TestDb::reconnect`] after
    /// migrating.
    ///
    /// # Panics
    /// When the database cannot be set up, or PostgreSQL is missing under `CI=true`.
    pub async fn empty(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => Some(Self::sqlite().await),
            Backend::Postgres => {
                let admin_url = required_service(POSTGRES_URL_VAR, "PostgreSQL")?;
                Some(Self::provision_postgres(&admin_url).await)
            }
        }
    }

    async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temporary folder for a test database");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        let db = Database::connect_with(&url, &Self::options())
            .await
            .expect("open SQLite test database");
        TestDb {
            db,
            app_url: url.clone(),
            owner_url: url,
            _dir: Some(dir),
        }
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// Applies `migrations` as the owner of the tables, then (re)connects `db`.
    ///
    /// # Panics
    /// When a migration fails.
    pub async fn migrate_as_owner(&self, migrations: &Migrations) {
        Database::migrate_at(&self.owner_url, migrations)
            .await
            .expect("migrate test database as the owner role");
    }

    /// A new application handle on this database (after the schema changed, on PostgreSQL the
    /// start-up checks run again).
    ///
    /// # Errors
    /// What [`Database::connect`] refuses.
    pub async fn reconnect(&self) -> crate::Result<Database> {
        Database::connect_with(&self.app_url, &Self::options()).await
    }

    /// The production defaults, except that a connection is waited for up to a minute: tests
    /// run many writers at once on a busy machine, where the production bound (5 s, then a
    /// 503) would make a slow test a failed one.
    fn options() -> DatabaseOptions {
        DatabaseOptions {
            acquire_timeout: std::time::Duration::from_secs(60),
            busy_timeout: std::time::Duration::from_secs(60),
            ..DatabaseOptions::default()
        }
    }

    /// Runs `sql` (one or more statements) as the owner of the tables, as a migration would.
    ///
    /// # Panics
    /// When a statement fails.
    pub async fn execute_as_owner(&self, sql: &str) {
        use sqlx::{Connection, Executor};
        match self.backend() {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.owner_url)
                    .await
                    .expect("connect as owner");
                conn.execute(sql).await.expect(sql);
                conn.close().await.ok();
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.owner_url)
                    .await
                    .expect("connect as owner");
                conn.execute(sql).await.expect(sql);
                conn.close().await.ok();
            }
        }
    }

    async fn provision_postgres(admin_url: &str) -> TestDb {
        use sqlx::{ConnectOptions, Executor};
        use std::str::FromStr;

        let admin = sqlx::postgres::PgConnectOptions::from_str(admin_url)
            .expect("TENANTKIT_TEST_POSTGRES_URL is a PostgreSQL URL");
        let mut conn = admin
            .connect()
            .await
            .expect("connect to the test PostgreSQL as superuser");
        // Idempotent under concurrency: parallel tests race to create the same roles.
        for statement in [
            "CREATE ROLE tenantkit_app NOLOGIN".to_owned(),
            format!("CREATE ROLE {OWNER_ROLE} LOGIN PASSWORD '{TEST_PASSWORD}'"),
            format!(
                "CREATE ROLE {APP_LOGIN_ROLE} LOGIN PASSWORD '{TEST_PASSWORD}' IN ROLE tenantkit_app"
            ),
        ] {
            conn.execute(
                format!(
                    "DO $$ BEGIN {statement}; \
                     EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
                )
                .as_str(),
            )
            .await
            .expect("create test roles");
        }
        let name = format!("tk_test_{}", uuid::Uuid::now_v7().simple());
        conn.execute(format!("CREATE DATABASE {name} OWNER {OWNER_ROLE}").as_str())
            .await
            .expect("create test database");
        let url_for = |role: &str| {
            format!(
                "postgres://{role}:{TEST_PASSWORD}@{}:{}/{name}",
                admin.get_host(),
                admin.get_port()
            )
        };
        let (owner_url, app_url) = (url_for(OWNER_ROLE), url_for(APP_LOGIN_ROLE));
        // The app role may not create anything (its tables' grants come from migrations).
        let db = Database::connect_with(
            &app_url,
            &DatabaseOptions {
                require_rls_safe_role: false,
                ..DatabaseOptions::default()
            },
        )
        .await
        .expect("connect as the RLS-bound app role");
        TestDb {
            db,
            app_url,
            owner_url,
            _dir: None,
        }
    }
}

/// One tenant with its owner.
#[derive(Debug, Clone)]
pub struct TenantFixture {
    /// The tenant.
    pub tenant: Tenant,
    /// Its owner.
    pub owner: User,
    /// The owner as a verified caller.
    pub principal: Principal,
}

impl TenantFixture {
    /// Creates a tenant named `name` with an owner `owner@<name>.test`.
    ///
    /// # Panics
    /// When the database refuses (the fixture expects a fresh database).
    pub async fn create(db: &Database, name: &str) -> TenantFixture {
        let (tenant, mut tx) = db
            .create_tenant(NewTenant {
                name: name.to_owned(),
                slug: Some(
                    Slug::parse(&format!(
                        "{name}-{}",
                        &uuid::Uuid::now_v7().simple().to_string()[24..]
                    ))
                    .expect("slug"),
                ),
            })
            .await
            .expect("create tenant");
        let owner = tx
            .create_user(NewUser {
                email: Email::parse(&format!(
                    "owner-{}@{name}.test",
                    uuid::Uuid::now_v7().simple()
                ))
                .expect("email"),
                password_hash: None,
            })
            .await
            .expect("create owner");
        tx.add_member(owner.id, Role::Owner)
            .await
            .expect("add owner");
        tx.commit().await.expect("commit tenant fixture");
        let principal = principal(&tenant, &owner, Role::Owner);
        TenantFixture {
            tenant,
            owner,
            principal,
        }
    }

    /// The owner's tenant scope.
    pub fn scope(&self) -> TenantScope {
        TenantScope::of(&self.principal)
    }

    /// Adds a new user with `role` to this tenant and returns them as a caller.
    ///
    /// # Panics
    /// When the database refuses.
    pub async fn add_user(&self, db: &Database, role: Role) -> (User, Principal) {
        let mut tx = db.begin(&self.scope()).await.expect("begin");
        let user = tx
            .create_user(NewUser {
                email: Email::parse(&format!(
                    "{role}-{}@example.test",
                    uuid::Uuid::now_v7().simple()
                ))
                .expect("email"),
                password_hash: None,
            })
            .await
            .expect("create user");
        tx.add_member(user.id, role).await.expect("add member");
        tx.commit().await.expect("commit");
        let principal = principal(&self.tenant, &user, role);
        (user, principal)
    }
}

/// Two tenants, `a` and `b`, each with an owner: the world every isolation test needs.
#[derive(Debug, Clone)]
pub struct TwoTenants {
    /// The first tenant.
    pub a: TenantFixture,
    /// The second tenant.
    pub b: TenantFixture,
}

impl TwoTenants {
    /// Creates both tenants.
    ///
    /// # Panics
    /// When the database refuses.
    pub async fn create(db: &Database) -> TwoTenants {
        TwoTenants {
            a: TenantFixture::create(db, "alpha").await,
            b: TenantFixture::create(db, "bravo").await,
        }
    }
}

/// A verified caller for `user` in `tenant` with `role`, as the auth layer would build it.
pub fn principal(tenant: &Tenant, user: &User, role: Role) -> Principal {
    Principal::new(
        user.id,
        tenant.id,
        role,
        Vec::<String>::new(),
        SessionId::new(),
    )
}

/// Runs each listed test once per backend, as `sqlite::<test>` and `postgres::<test>`.
///
/// Each test is an `async fn(F)` taking the value its fixture makes; a fixture is an
/// `async fn(Backend) -> Option<F>` that gives `None` (after [`required_service`] said so) when
/// the backend is not available outside CI, and fails the test under `CI=true`. Several groups
/// with different fixtures may share one invocation (one per module). Names resolve from the
/// module the macro is called in.
///
/// ```text
/// async fn db(backend: Backend) -> Option<TestDb> {
///     TestDb::new(backend, &Migrations::new()).await
/// }
///
/// async fn another_tenants_team_is_not_found(test_db: TestDb) { /* ... */ }
///
/// tenantkit_core::backend_tests!(
///     fixture = db; another_tenants_team_is_not_found;
///     fixture = other_fixture; more, tests;
/// );
/// ```
#[macro_export]
macro_rules! backend_tests {
    ($(fixture = $fixture:path; $($test:ident),+ $(,)?);+ $(;)?) => {
        $crate::backend_tests!(@backend sqlite, Sqlite; $(fixture = $fixture; $($test),+);+);
        $crate::backend_tests!(@backend postgres, Postgres; $(fixture = $fixture; $($test),+);+);
    };
    (@backend $module:ident, $backend:ident; $(fixture = $fixture:path; $($test:ident),+);+) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $($(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(fixture) = $fixture($crate::Backend::$backend).await else {
                        return;
                    };
                    super::$test(fixture).await;
                }
            )+)+
        }
    };
}

/// The isolation conformance suite every tenant table must pass, given a record tenant A
/// created (and committed) in `table`:
///
/// - tenant B cannot find, get, list, update or delete it: each answers exactly like a
///   missing record, and A's record is unchanged afterwards;
/// - on PostgreSQL, with the application's tenant filter deliberately left out, row-level
///   security still hides it: unfiltered `SELECT`, `UPDATE` and `DELETE` through B's scope see
///   or touch none of A's rows, and A's scope cannot move a row to B (`WITH CHECK`).
///
/// # Panics
/// When any of these does not hold.
pub async fn assert_tenant_isolation<T>(
    test_db: &TestDb,
    world: &TwoTenants,
    table: &str,
    record_of_a: &T,
    patch: impl Fn() -> T::Patch,
) where
    T: crate::TenantScoped + PartialEq + fmt::Debug,
    T::Id: PartialEq,
{
    use crate::{Error, Limit, PageRequest};
    let db = &test_db.db;
    let id = record_of_a.id();
    let mut tx = db.begin(&world.b.scope()).await.expect("begin as B");
    assert_eq!(
        T::find(&mut tx, id).await.expect("find"),
        None,
        "B finds A's record"
    );
    assert!(
        matches!(T::get(&mut tx, id).await, Err(Error::NotFound)),
        "B gets A's record"
    );
    let page = T::list(
        &mut tx,
        &Default::default(),
        PageRequest::first(Limit::new(100).expect("limit")),
    )
    .await
    .expect("list");
    assert!(
        page.items.iter().all(|r| r.id() != id),
        "B lists A's record"
    );
    assert!(
        matches!(
            T::update(&mut tx, id, None, patch()).await,
            Err(Error::NotFound)
        ),
        "B updates A's record"
    );
    assert!(
        matches!(T::delete(&mut tx, id, None).await, Err(Error::NotFound)),
        "B deletes A's record"
    );
    drop(tx);
    let mut tx = db.begin_read(&world.a.scope()).await.expect("begin as A");
    assert_eq!(
        T::find(&mut tx, id).await.expect("find").as_ref(),
        Some(record_of_a),
        "A's record changed"
    );
    drop(tx);
    if test_db.backend() == Backend::Postgres {
        assert_rls_hides(test_db, world, table).await;
    }
}

/// The PostgreSQL half of [`assert_tenant_isolation`]: unfiltered statements through B's
/// scope see and touch none of `table`'s rows of A (which must have at least one), and A's
/// scope cannot move its rows to B.
///
/// # Panics
/// When row-level security lets any of them through, or the database is not PostgreSQL.
pub async fn assert_rls_hides(test_db: &TestDb, world: &TwoTenants, table: &str) {
    #[cfg(feature = "postgres")]
    {
        let db = &test_db.db;
        let count = format!("SELECT count(*) FROM {table}");
        let mut a = db.begin(&world.a.scope()).await.expect("begin as A");
        let crate::RawConn::Postgres(conn) = a.raw() else {
            panic!("a PostgreSQL test database gives PostgreSQL connections");
        };
        let of_a: i64 = sqlx::query_scalar(&count)
            .fetch_one(&mut *conn)
            .await
            .expect("count");
        assert!(of_a > 0, "A has rows in {table}");
        // WITH CHECK: A cannot hand a row to B.
        let moved = sqlx::query(&format!("UPDATE {table} SET tenant_id = $1"))
            .bind(world.b.tenant.id)
            .execute(&mut *conn)
            .await;
        assert!(moved.is_err(), "A moved rows of {table} to B");
        drop(a);

        let mut b = db.begin(&world.b.scope()).await.expect("begin as B");
        let crate::RawConn::Postgres(conn) = b.raw() else {
            panic!("a PostgreSQL test database gives PostgreSQL connections");
        };
        let by_id: i64 = sqlx::query_scalar(&format!("{count} WHERE tenant_id = $1"))
            .bind(world.a.tenant.id)
            .fetch_one(&mut *conn)
            .await
            .expect("count A's rows through B");
        assert_eq!(
            by_id, 0,
            "B reads A's rows of {table} by asking for A's tenant id"
        );
        let all: i64 = sqlx::query_scalar(&count)
            .fetch_one(&mut *conn)
            .await
            .expect("count");
        let own: i64 = sqlx::query_scalar(&format!("{count} WHERE tenant_id = $1"))
            .bind(world.b.tenant.id)
            .fetch_one(&mut *conn)
            .await
            .expect("count B's rows");
        assert_eq!(
            all, own,
            "an unfiltered read through B's scope sees other tenants' rows of {table}"
        );
        let updated = sqlx::query(&format!(
            "UPDATE {table} SET tenant_id = tenant_id WHERE tenant_id = $1"
        ))
        .bind(world.a.tenant.id)
        .execute(&mut *conn)
        .await
        .expect("update of A's rows");
        let deleted = sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
            .bind(world.a.tenant.id)
            .execute(&mut *conn)
            .await
            .expect("unfiltered delete");
        assert_eq!(
            (updated.rows_affected(), deleted.rows_affected()),
            (0, 0),
            "B changed A's rows of {table}"
        );
        drop(b);

        let mut a = db.begin_read(&world.a.scope()).await.expect("begin as A");
        let crate::RawConn::Postgres(conn) = a.raw() else {
            panic!("a PostgreSQL test database gives PostgreSQL connections");
        };
        let after: i64 = sqlx::query_scalar(&count)
            .fetch_one(conn)
            .await
            .expect("count");
        assert_eq!(after, of_a, "A's rows of {table} survived B");
    }
    #[cfg(not(feature = "postgres"))]
    {
        let _ = (test_db, world, table);
        panic!("row-level security needs the postgres feature");
    }
}

/// The fixture of [`backend_tests!`](crate::backend_tests) for tests that set up their own
/// world (several servers, custom configurations): just the backend. Such a test must itself
/// return when the backend is not available (every fixture of this module gives `None` then).
pub async fn backend(backend: Backend) -> Option<Backend> {
    Some(backend)
}
