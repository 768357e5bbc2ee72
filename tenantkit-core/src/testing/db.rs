//! Throwaway databases: a temporary SQLite file, or a fresh PostgreSQL database owned by a
//! migration role and used through an RLS-bound application role.

use std::fmt;

use crate::{Backend, Database, DatabaseOptions, Migrations};

/// The variable naming the PostgreSQL superuser URL for tests.
pub const POSTGRES_URL_VAR: &str = "TENANTKIT_TEST_POSTGRES_URL";

#[cfg(feature = "postgres")]
const OWNER_ROLE: &str = "tenantkit_owner";
#[cfg(feature = "postgres")]
const APP_LOGIN_ROLE: &str = "tenantkit_app_login";
#[cfg(feature = "postgres")]
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
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => Some(Self::sqlite().await),
            #[cfg(feature = "postgres")]
            Backend::Postgres => {
                let admin_url = super::required_service(POSTGRES_URL_VAR, "PostgreSQL")?;
                Some(Self::provision_postgres(&admin_url).await)
            }
            // A one-backend build (`--no-default-features --features sqlite`): `backend_tests!`
            // generates no test of the other backend; a hand-written one ends here.
            #[allow(unreachable_patterns)]
            _ => {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "note: a {backend} test did NOT run: this build has no `{backend}` feature"
                );
                None
            }
        }
    }

    #[cfg(feature = "sqlite")]
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
        #[allow(unused_imports)]
        use sqlx::{Connection, Executor};
        match self.backend() {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.owner_url)
                    .await
                    .expect("connect as owner");
                conn.execute(sql).await.expect(sql);
                conn.close().await.ok();
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.owner_url)
                    .await
                    .expect("connect as owner");
                conn.execute(sql).await.expect(sql);
                conn.close().await.ok();
            }
            #[allow(unreachable_patterns)]
            _ => {
                let _ = sql;
                unreachable!("a TestDb exists only for a compiled backend")
            }
        }
    }

    #[cfg(feature = "postgres")]
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
