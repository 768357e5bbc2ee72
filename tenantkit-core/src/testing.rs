//! Test fixtures shared by this workspace's tests: throwaway databases on each backend and a
//! two-tenant world. Enabled by the `testing` feature; not for production use.
//!
//! PostgreSQL tests read the superuser URL of a throwaway cluster from
//! `TENANTKIT_TEST_POSTGRES_URL` (the workspace's `scripts/test.sh` starts one and sets it).
//! Each test gets a fresh database owned by `tenantkit_owner`, migrated as that owner, and
//! used through `tenantkit_app_login`, a member of `tenantkit_app` that cannot bypass RLS.
//! Without the variable the PostgreSQL tests say they did not run, except under `CI=true`,
//! where a missing PostgreSQL is a failure.

use std::fmt;

use crate::{
    Backend, Database, DatabaseOptions, Email, NewProject, NewTask, NewTenant, NewUser, Principal,
    Project, ProjectId, Role, SessionId, Slug, Task, Tenant, TenantScope, TenantScoped, User,
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
    /// A fresh database on `backend`; `None` (after saying so on stderr) when the backend is
    /// not available outside CI.
    ///
    /// # Panics
    /// When the database cannot be set up, or PostgreSQL is missing under `CI=true`.
    pub async fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => Some(Self::sqlite().await),
            Backend::Postgres => Self::postgres().await,
        }
    }

    /// A fresh SQLite database in a temporary folder (a file, so WAL and the pool are real).
    ///
    /// # Panics
    /// When the temporary folder or database cannot be created.
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temporary folder for a test database");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        let db = Database::connect(&url)
            .await
            .expect("open SQLite test database");
        db.migrate().await.expect("migrate SQLite test database");
        TestDb {
            db,
            app_url: url.clone(),
            owner_url: url,
            _dir: Some(dir),
        }
    }

    /// A fresh PostgreSQL database, or `None` when [`POSTGRES_URL_VAR`] is unset outside CI.
    ///
    /// # Panics
    /// When the cluster is unreachable, or PostgreSQL is missing under `CI=true`.
    pub async fn postgres() -> Option<TestDb> {
        let admin_url = required_service(POSTGRES_URL_VAR, "PostgreSQL")?;
        Some(Self::provision_postgres(&admin_url).await)
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
            format!("CREATE ROLE {APP_LOGIN_ROLE} LOGIN PASSWORD '{TEST_PASSWORD}' IN ROLE tenantkit_app"),
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
        let owner = Database::connect_with(&owner_url, &DatabaseOptions::for_migrations())
            .await
            .expect("connect as the owner role");
        owner
            .migrate()
            .await
            .expect("migrate PostgreSQL test database");
        owner.close().await;
        let db = Database::connect(&app_url)
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

/// Creates and commits a project named `name` in `scope`.
///
/// # Panics
/// When the database refuses.
pub async fn create_project(db: &Database, scope: &TenantScope, name: &str) -> Project {
    let mut tx = db.begin(scope).await.expect("begin");
    let new = NewProject {
        name: name.to_owned(),
        ..NewProject::default()
    };
    let project = Project::create(&mut tx, new).await.expect("create project");
    tx.commit().await.expect("commit project");
    project
}

/// Creates and commits a `todo` task titled `title` in `project`.
///
/// # Panics
/// When the database refuses.
pub async fn create_task(
    db: &Database,
    scope: &TenantScope,
    project: ProjectId,
    title: &str,
) -> Task {
    let mut tx = db.begin(scope).await.expect("begin");
    let task = Task::create(&mut tx, NewTask::new(project, title))
        .await
        .expect("create task");
    tx.commit().await.expect("commit task");
    task
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
