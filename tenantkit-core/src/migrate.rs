//! Migrations per crate, composed into one registry.
//!
//! Each crate that owns tables embeds its own migrations (one folder per backend,
//! `migrations/sqlite` and `migrations/postgres`, with `sqlx::migrate!`) in its own version
//! range, and exposes them as a [`MigrationSet`]. An application composes the sets it uses in
//! a [`Migrations`] registry and applies it with [`Database::migrate`](crate::Database::migrate):
//! every set runs against the one `_sqlx_migrations` table, in version order, each ignoring the
//! versions the others applied.
//!
//! Version ranges (one file name prefix per migration, never reused):
//!
//! | range | owner |
//! | --- | --- |
//! | 1–999 | reserved: wave-1 history (one stream for everything, before the split) |
//! | 1000–1999 | tenantkit-core |
//! | 2000–2999 | tenantkit-auth |
//! | 3000–3999 | tenantkit-storage |
//! | 4000–4999 | tenantkit-billing |
//! | 5000–5999 | tenantkit-realtime |
//! | 10000 and up | the application (your own tables) |
//!
//! ```
//! use tenantkit_core::{Database, Migrations, Result};
//!
//! // In your crate, beside `migrations/sqlite/10001_notes.sql` and
//! // `migrations/postgres/10001_notes.sql`:
//! //     pub fn migrations() -> MigrationSet { tenantkit_core::migration_set!("my-app") }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<()> {
//! let db = Database::connect("sqlite::memory:").await?;
//! let registry = Migrations::new(); // tenantkit-core's own set; add yours with `.with(..)`
//! db.migrate(&registry).await?;
//! db.migrate(&registry).await?; // idempotent
//! # Ok(())
//! # }
//! ```
//!
//! On PostgreSQL a tenant table's migration puts it behind row-level security with the
//! helpers core's migrations install:
//!
//! ```sql
//! CREATE TABLE notes (id uuid PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES tenants (id), body text NOT NULL);
//! SELECT tenantkit_enable_tenant_rls('notes');          -- ENABLE + FORCE RLS, tenant policy
//! GRANT SELECT, INSERT, UPDATE, DELETE ON notes TO tenantkit_app;
//! ```
//!
//! `tenantkit_enable_tenant_rls` also registers the table (`tenantkit_tenant_tables`);
//! `SELECT tenantkit_register_tenant_table('notes');` registers one without changing it.
//! [`Database::connect`](crate::Database::connect) refuses to start when a registered table
//! (tenantkit's own, or one the application registered) is not behind row-level security,
//! naming it. Other tables of the schema, such as an existing application's own tables with a
//! `tenant_id` column, are not looked at: register them to have them checked.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use sqlx::migrate::Migrator;

use crate::{Error, Result};

/// The migrations of one crate, for both backends.
#[derive(Clone)]
pub struct MigrationSet {
    name: &'static str,
    sqlite: fn() -> Migrator,
    postgres: fn() -> Migrator,
    replaces: Vec<(i64, &'static [i64])>,
}

impl fmt::Debug for MigrationSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MigrationSet")
            .field("name", &self.name)
            .field("replaces", &self.replaces)
            .finish_non_exhaustive()
    }
}

/// The [`MigrationSet`] of the calling crate, from its `migrations/sqlite` and
/// `migrations/postgres` folders (paths relative to the crate's `Cargo.toml`). The crate
/// needs `sqlx` (with the `migrate` feature) as a dependency, since `sqlx::migrate!` embeds the
/// files.
#[macro_export]
macro_rules! migration_set {
    ($name:expr) => {
        $crate::MigrationSet::new(
            $name,
            || ::sqlx::migrate!("./migrations/sqlite"),
            || ::sqlx::migrate!("./migrations/postgres"),
        )
    };
}

impl MigrationSet {
    /// A set named `name` (shown in errors and logs) whose migrators are built by `sqlite`
    /// and `postgres` (usually `|| sqlx::migrate!("./migrations/sqlite")`; see
    /// [`migration_set!`](crate::migration_set)).
    pub fn new(name: &'static str, sqlite: fn() -> Migrator, postgres: fn() -> Migrator) -> Self {
        Self {
            name,
            sqlite,
            postgres,
            replaces: Vec::new(),
        }
    }

    /// Declares that this set's migration `version` creates nothing new when every one of
    /// `old` is already applied (it is a split or squash of them): on such a database it is
    /// recorded as applied instead of run. This is how a database made by an earlier layout
    /// adopts a new one without re-creating its tables. `old` must be versions of a set the
    /// registry upgrades from ([`Migrations::upgrading_from`]), whose checksums sqlx checks
    /// first; versions of no such set are never adopted.
    ///
    /// There is no way back: once the new versions are recorded, the earlier release's
    /// migrator refuses the database (`VersionMissing`). Upgrade every instance together.
    pub fn replacing(mut self, version: i64, old: &'static [i64]) -> Self {
        self.replaces.push((version, old));
        self
    }

    /// The set's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn migrator(&self, backend: crate::Backend) -> Migrator {
        let mut migrator = match backend {
            crate::Backend::Sqlite => (self.sqlite)(),
            crate::Backend::Postgres => (self.postgres)(),
        };
        // The other sets' versions live in the same table.
        migrator.set_ignore_missing(true);
        migrator
    }

    fn versions(&self, backend: crate::Backend) -> Vec<i64> {
        self.migrator(backend)
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .map(|m| m.version)
            .collect()
    }
}

/// The migration sets an application uses, applied together by
/// [`Database::migrate`](crate::Database::migrate). [`Migrations::new`] holds tenantkit-core's
/// own set; add the others with [`Migrations::with`].
#[derive(Debug, Clone)]
pub struct Migrations {
    sets: Vec<MigrationSet>,
    history: Vec<MigrationSet>,
}

impl Default for Migrations {
    fn default() -> Self {
        Self::new()
    }
}

impl Migrations {
    /// A registry with tenantkit-core's migrations.
    pub fn new() -> Self {
        Self {
            sets: vec![core_migrations()],
            history: Vec::new(),
        }
    }

    /// Adds another crate's set.
    pub fn with(mut self, set: MigrationSet) -> Self {
        self.sets.push(set);
        self
    }

    /// Adds a frozen set of an earlier layout: on a database where any of its versions is
    /// applied, the rest of it is applied first (so a database of any earlier release
    /// reaches the layout's last state), and then the current sets' [`MigrationSet::replacing`]
    /// declarations adopt it. A fresh database never runs it.
    pub fn upgrading_from(mut self, history: MigrationSet) -> Self {
        self.history.push(history);
        self
    }

    /// The names of the current sets, in the order they run.
    pub fn names(&self) -> Vec<&'static str> {
        self.sets.iter().map(MigrationSet::name).collect()
    }

    /// The current sets in the order they run (by their lowest version), after checking that
    /// no version belongs to two sets and that current sets stay out of the reserved range.
    fn ordered(&self, backend: crate::Backend) -> Result<Vec<(&MigrationSet, Vec<i64>)>> {
        let mut owners: BTreeMap<i64, &'static str> = BTreeMap::new();
        let mut sets = Vec::new();
        for (set, current) in self
            .sets
            .iter()
            .map(|s| (s, true))
            .chain(self.history.iter().map(|s| (s, false)))
        {
            let versions = set.versions(backend);
            for version in &versions {
                if let Some(other) = owners.insert(*version, set.name) {
                    return Err(Error::Config(format!(
                        "migration version {version} belongs to both `{other}` and `{}`",
                        set.name
                    )));
                }
                if current && *version < FIRST_CURRENT_VERSION {
                    return Err(Error::Config(format!(
                        "migration version {version} of `{}` is in the reserved range \
                         (below {FIRST_CURRENT_VERSION}; see tenantkit_core::migrate)",
                        set.name
                    )));
                }
            }
            if current {
                sets.push((set, versions));
            }
        }
        sets.sort_by_key(|(_, versions)| versions.first().copied().unwrap_or(i64::MAX));
        Ok(sets)
    }
}

/// tenantkit-core's own set: tenants, users, memberships, audit log, invitations, teams, and
/// the row-level-security helpers. Versions 1001–1004 split wave-1's single stream.
fn core_migrations() -> MigrationSet {
    crate::migration_set!("tenantkit-core")
        .replacing(1001, &[1])
        .replacing(1002, &[4])
        .replacing(1003, &[5])
        .replacing(1004, &[6])
}

/// Versions below this are reserved for wave-1 history; current sets start here.
const FIRST_CURRENT_VERSION: i64 = 1000;

/// Applied versions and whether each succeeded; empty before the first migration.
type Applied = HashMap<i64, bool>;

macro_rules! apply_impl {
    ($name:ident, $conn:ty, $backend:expr, $table_exists:literal) => {
        pub(crate) async fn $name(migrations: &Migrations, conn: &mut $conn) -> Result<()> {
            let backend = $backend;
            let sets = migrations.ordered(backend)?;
            let applied = async |conn: &mut $conn| -> Result<Applied> {
                let exists: Option<i32> =
                    sqlx::query_scalar($table_exists).fetch_optional(&mut *conn).await?;
                if exists.is_none() {
                    return Ok(Applied::new());
                }
                let rows: Vec<(i64, bool)> =
                    sqlx::query_as("SELECT version, success FROM _sqlx_migrations")
                        .fetch_all(&mut *conn)
                        .await?;
                Ok(rows.into_iter().collect())
            };
            let mut done = applied(&mut *conn).await?;
            // An earlier layout's database: finish its history first (sqlx checks the applied
            // versions' checksums), so every one of its tables exists as its last release left
            // them. Only such validated versions can be adopted below.
            let mut adoptable = std::collections::HashSet::new();
            for history in &migrations.history {
                let versions = history.versions(backend);
                if versions.iter().any(|v| done.contains_key(v)) {
                    tracing::info!(set = history.name, "completing the earlier layout's migrations");
                    history.migrator(backend).run(&mut *conn).await?;
                    adoptable.extend(versions);
                }
            }
            done = applied(&mut *conn).await?;
            for (set, _) in &sets {
                let migrator = set.migrator(backend);
                for (version, old) in &set.replaces {
                    let adopted = !done.contains_key(version)
                        && old
                            .iter()
                            .all(|v| adoptable.contains(v) && done.get(v) == Some(&true));
                    if !adopted {
                        continue;
                    }
                    let migration = migrator
                        .iter()
                        .find(|m| m.version == *version)
                        .ok_or_else(|| {
                            Error::Config(format!(
                                "`{}` declares that version {version} replaces {old:?}, \
                                 but has no migration {version}",
                                set.name
                            ))
                        })?;
                    // Recorded as sqlx records a migration it ran, so later runs validate
                    // its checksum like any other.
                    sqlx::query(
                        "INSERT INTO _sqlx_migrations \
                         (version, description, success, checksum, execution_time) \
                         VALUES ($1, $2, TRUE, $3, -1) ON CONFLICT (version) DO NOTHING",
                    )
                    .bind(migration.version)
                    .bind(&*migration.description)
                    .bind(&*migration.checksum)
                    .execute(&mut *conn)
                    .await?;
                    tracing::info!(set = set.name, version, replaces = ?old, "adopted an earlier layout's migrations");
                }
            }
            for (set, _) in &sets {
                set.migrator(backend).run(&mut *conn).await?;
            }
            Ok(())
        }
    };
}

#[cfg(feature = "sqlite")]
apply_impl!(
    apply_sqlite,
    sqlx::SqliteConnection,
    crate::Backend::Sqlite,
    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
);

#[cfg(feature = "postgres")]
apply_impl!(
    apply_postgres,
    sqlx::PgConnection,
    crate::Backend::Postgres,
    "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = current_schema() \
     AND tablename = '_sqlx_migrations'"
);
