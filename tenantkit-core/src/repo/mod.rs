//! Repositories over tenant-owned tables: the [`TenantScoped`] trait every such record
//! implements, the [`TenantTable`] helper that writes their common queries once, and the
//! [`Visibility`] rule for team-restricted rows.

mod table;
pub(crate) mod teams;

pub use table::{TenantTable, Value};

use std::fmt::Debug;
use std::future::Future;

use crate::{Error, Page, PageRequest, Result, TenantTx, Version};

/// A record type owned by a tenant, with the repository operations every such table offers.
///
/// Every method takes a [`TenantTx`], so no code can read or write these rows without a tenant
/// scope; each implementation filters by [`TenantTx::tenant_id`]. Another tenant's record is
/// indistinguishable from a missing one: `find` gives `Ok(None)`, `update` and `delete` give
/// [`Error::NotFound`].
///
/// Implement it for your own tables with [`with_conn!`](crate::with_conn) (one SQL text for
/// both backends) and [`TenantTable`] (find, contains and delete written once), binding
/// [`TenantTx::tenant_id`] in every query; on PostgreSQL, give the table the standard policy
/// (`SELECT tenantkit_enable_tenant_rls('<table>')` in its migration; see
/// [`crate::migrate`]). A complete example, run on both backends by this crate's tests:
///
/// ```
/// use tenantkit_core::{
///     with_conn, Backend, Error, Migrations, Page, PageRequest, Result, TenantScoped,
///     TenantTable, TenantTx, Version, Visibility,
/// };
///
/// tenantkit_core::define_id!(
///     /// Identifies a note.
///     NoteId, "note id"
/// );
///
/// #[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
/// struct Note { id: NoteId, body: String, version: Version }
///
/// const NOTES: TenantTable = TenantTable {
///     name: "notes",
///     columns: "id, body, version",
///     visibility: Visibility::Tenant,
/// };
///
/// impl TenantScoped for Note {
///     type Id = NoteId;
///     type New = String;
///     type Patch = String;
///     type Filter = ();
///
///     fn id(&self) -> NoteId { self.id }
///     fn version(&self) -> Version { self.version }
///
///     async fn create(tx: &mut TenantTx, body: String) -> Result<Self> {
///         let note = Note { id: NoteId::new(), body, version: Version::INITIAL };
///         let tenant = tx.tenant_id();
///         with_conn!(tx, |c| {
///             sqlx::query("INSERT INTO notes (id, tenant_id, body, version) VALUES ($1, $2, $3, $4)")
///                 .bind(note.id).bind(tenant).bind(&note.body).bind(note.version)
///                 .execute(c).await.map(drop) // one type on every backend
///         })?;
///         Ok(note)
///     }
///     async fn find(tx: &mut TenantTx, id: NoteId) -> Result<Option<Self>> {
///         NOTES.find(tx, id.into()).await
///     }
///     async fn update(tx: &mut TenantTx, id: NoteId, expected: Option<Version>, body: String) -> Result<Self> {
///         let mut note: Note = tenantkit_core::read_for_update(tx, id, expected).await?;
///         let base = note.version;
///         note.body = body;
///         note.version = base.next();
///         let tenant = tx.tenant_id();
///         let rows = with_conn!(tx, |c| {
///             sqlx::query("UPDATE notes SET body = $1, version = $2 \
///                          WHERE tenant_id = $3 AND id = $4 AND version = $5")
///                 .bind(&note.body).bind(note.version).bind(tenant).bind(id).bind(base)
///                 .execute(c).await.map(|done| done.rows_affected())
///         })?;
///         tenantkit_core::ensure_written::<Self>(tx, id, rows).await?;
///         Ok(note)
///     }
///     async fn delete(tx: &mut TenantTx, id: NoteId, expected: Option<Version>) -> Result<()> {
///         NOTES.delete::<Self>(tx, id, expected).await
///     }
///     async fn list(tx: &mut TenantTx, _: &(), page: PageRequest) -> Result<Page<Self>> {
///         let tenant = tx.tenant_id();
///         let rows: Vec<Note> = with_conn!(tx, |c| {
///             sqlx::query_as("SELECT id, body, version FROM notes \
///                             WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3")
///                 .bind(tenant).bind(page.after_key()).bind(page.fetch_count())
///                 .fetch_all(c).await
///         })?;
///         Ok(Page::from_rows(rows, &page, |n| n.id.as_uuid()))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<()> {
/// use tenantkit_core::testing::{TestDb, TwoTenants};
///
/// // SQLite always; PostgreSQL where the test script provides one (required in CI).
/// for backend in [Backend::Sqlite, Backend::Postgres] {
///     let Some(test_db) = TestDb::new(backend, &Migrations::new()).await else { continue };
///     // The table's migration, run as the owner of the tables.
///     test_db.execute_as_owner(match backend {
///         Backend::Sqlite => "CREATE TABLE notes (id BLOB PRIMARY KEY, tenant_id BLOB NOT NULL \
///                             REFERENCES tenants (id), body TEXT NOT NULL, version INTEGER NOT NULL)",
///         _ => "CREATE TABLE notes (id uuid PRIMARY KEY, tenant_id uuid NOT NULL \
///               REFERENCES tenants (id), body text NOT NULL, version bigint NOT NULL); \
///               SELECT tenantkit_enable_tenant_rls('notes'); \
///               GRANT SELECT, INSERT, UPDATE, DELETE ON notes TO tenantkit_app",
///     }).await;
///     let db = &test_db.db;
///     let world = TwoTenants::create(db).await;
///
///     let mut tx = db.begin(&world.a.scope()).await?;
///     let note = Note::create(&mut tx, "hello".into()).await?;
///     let note = Note::update(&mut tx, note.id, Some(note.version), "hello, world".into()).await?;
///     assert_eq!(note.version, Version::new(2));
///     tx.commit().await?;
///
///     // Another tenant can neither see nor delete it.
///     let mut other = db.begin(&world.b.scope()).await?;
///     assert_eq!(Note::find(&mut other, note.id).await?, None);
///     assert!(matches!(Note::delete(&mut other, note.id, None).await, Err(Error::NotFound)));
/// }
/// # Ok(())
/// # }
/// ```
pub trait TenantScoped: Sized + Send {
    /// The record's identifier type.
    type Id: Copy + Debug + Send + Sync;
    /// What creating a record takes.
    type New: Send;
    /// What updating a record takes (fields to change).
    type Patch: Send;
    /// Which records a list returns.
    type Filter: Default + Send + Sync;

    /// The record's id.
    fn id(&self) -> Self::Id;

    /// The record's optimistic-concurrency version.
    fn version(&self) -> Version;

    /// Validates and inserts a record in the transaction's tenant.
    ///
    /// # Errors
    /// [`Error::Validation`] for invalid input, [`Error::NotFound`] when a referenced record is
    /// not in this tenant, [`Error::Database`] on failure.
    fn create(tx: &mut TenantTx, new: Self::New) -> impl Future<Output = Result<Self>> + Send;

    /// Reads one record of the transaction's tenant; `Ok(None)` when absent or another tenant's.
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    fn find(tx: &mut TenantTx, id: Self::Id) -> impl Future<Output = Result<Option<Self>>> + Send;

    /// Applies `patch`; with `expected`, only if the record is still at that version (without,
    /// to whatever version is current). The version then grows by 1.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::VersionMismatch`] when someone else changed it first,
    /// [`Error::Validation`] when the patched record would be invalid.
    fn update(
        tx: &mut TenantTx,
        id: Self::Id,
        expected: Option<Version>,
        patch: Self::Patch,
    ) -> impl Future<Output = Result<Self>> + Send;

    /// Deletes a record, if `expected` is given only when it is still at that version.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::VersionMismatch`].
    fn delete(
        tx: &mut TenantTx,
        id: Self::Id,
        expected: Option<Version>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// One page of the tenant's records matching `filter`, in creation order.
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    fn list(
        tx: &mut TenantTx,
        filter: &Self::Filter,
        page: PageRequest,
    ) -> impl Future<Output = Result<Page<Self>>> + Send;

    /// Like [`TenantScoped::find`], but absence is [`Error::NotFound`].
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Database`].
    fn get(tx: &mut TenantTx, id: Self::Id) -> impl Future<Output = Result<Self>> + Send {
        async move { Self::find(tx, id).await?.ok_or(Error::NotFound) }
    }
}

/// Which rows of a tenant table a transaction that does not see everything may reach (see
/// [`crate::TenantScope::sees_all_teams`]).
///
/// Team restriction is a generic rule: any tenant table with a `team_id` (a team of the same
/// tenant, or `NULL`) and a boolean `restricted` column opts into it with
/// [`Visibility::Team`]; rows that belong to such a row share its visibility with
/// [`Visibility::Parent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Every row of the tenant.
    Tenant,
    /// The table has `team_id` and `restricted`: unrestricted rows, and restricted rows of
    /// the viewer's teams (admins and owners, and the system, see every row).
    Team,
    /// The rows belong to a row of `table` (a [`Visibility::Team`] table) through the column
    /// `key`, and are visible exactly when it is.
    Parent {
        /// The parent table.
        table: &'static str,
        /// The column holding the parent's id.
        key: &'static str,
        /// `true` when the schema guarantees every row's parent: `key` is `NOT NULL` and a
        /// foreign key `(tenant_id, key) REFERENCES table (tenant_id, id) ON DELETE CASCADE`
        /// removes the rows with their parent. A transaction that sees every team then reads
        /// the rows without looking the parent up (one index lookup fewer per row read).
        /// `false` (no such key, as for storage's files, which outlive a deleted parent until
        /// they are swept) keeps the lookup for every viewer, so an orphan is seen by nobody.
        enforced: bool,
    },
}

/// SQL that holds when the team-restricted row aliased `alias` (a table with `tenant_id`,
/// `team_id` and `restricted`) is visible to a viewer who does not see every team: `$user` is
/// bound to its viewer ([`TenantTx::viewer`]). `alias` must be a constant of your code, never
/// input. A transaction that sees every team ([`TenantTx::sees_all_teams`]) needs no condition
/// at all (see [`Visibility::condition`]).
pub fn team_visible(alias: &str, user: usize) -> String {
    format!(
        "(NOT {alias}.restricted OR EXISTS (SELECT 1 FROM team_members tm \
         WHERE tm.tenant_id = {alias}.tenant_id AND tm.team_id = {alias}.team_id \
         AND tm.user_id = ${user}))"
    )
}

impl Visibility {
    /// ` AND <condition>` limiting the table aliased `alias` to what the transaction may see,
    /// with its one parameter numbered `user` (bind [`TenantTx::viewer`] there when
    /// [`Visibility::has_parameters`]). Empty for [`Visibility::Tenant`], and for
    /// [`Visibility::Team`] in a transaction that sees every team (`sees_all`,
    /// [`TenantTx::sees_all_teams`]); [`Visibility::Parent`] then only requires the parent, and
    /// nothing when the schema guarantees it (`enforced`).
    ///
    /// The two cases are two statements rather than one with a `$all OR …` flag: PostgreSQL
    /// keeps a generic plan for a prepared statement only when it costs no more than one
    /// planned for the values at hand, and a flag the planner can fold away made it plan every
    /// execution of such a statement anew (a third of the database's time on a read of one
    /// record, here).
    pub fn condition(self, alias: &str, sees_all: bool, user: usize) -> String {
        match self {
            Visibility::Tenant => String::new(),
            Visibility::Team if sees_all => String::new(),
            Visibility::Team => format!(" AND {}", team_visible(alias, user)),
            // The schema keeps every row's parent: nothing to check for a viewer who sees all.
            Visibility::Parent { enforced: true, .. } if sees_all => String::new(),
            // The parent must exist either way (a row whose parent is gone is seen by nobody).
            Visibility::Parent { table, key, .. } => format!(
                " AND EXISTS (SELECT 1 FROM {table} parent WHERE parent.tenant_id = \
                 {alias}.tenant_id AND parent.id = {alias}.{key}{})",
                if sees_all {
                    String::new()
                } else {
                    format!(" AND {}", team_visible("parent", user))
                }
            ),
        }
    }

    /// Whether [`Visibility::condition`] has a parameter to bind.
    pub fn has_parameters(self, sees_all: bool) -> bool {
        !sees_all && self != Visibility::Tenant
    }
}

/// Binds the parameter of a [`Visibility::condition`] (the viewer) when it has one:
/// `bind_visibility!(query, visibility, sees_all, viewer)`, after the statement's other
/// parameters (the condition's is numbered last).
#[macro_export]
macro_rules! bind_visibility {
    ($query:expr, $visibility:expr, $all:expr, $viewer:expr) => {{
        let query = $query;
        if $visibility.has_parameters($all) {
            query.bind($viewer)
        } else {
            query
        }
    }};
}

/// Reads the record `id` to change it: it must be there (and visible to the transaction)
/// and, when the client sent the version it read, still at that version.
///
/// # Errors
/// [`Error::NotFound`], [`Error::VersionMismatch`], [`Error::Database`].
pub async fn read_for_update<T: TenantScoped>(
    tx: &mut TenantTx,
    id: T::Id,
    expected: Option<Version>,
) -> Result<T> {
    let record = T::get(tx, id).await?;
    let current = record.version();
    if expected.is_none_or(|expected| expected == current) {
        Ok(record)
    } else {
        Err(Error::VersionMismatch { current })
    }
}

/// `Ok` when a guarded `UPDATE`/`DELETE` touched a row; otherwise why it did not.
///
/// # Errors
/// [`Error::NotFound`] (gone, or never this tenant's), [`Error::VersionMismatch`].
pub async fn ensure_written<T: TenantScoped>(
    tx: &mut TenantTx,
    id: T::Id,
    rows: u64,
) -> Result<()> {
    if rows > 0 {
        Ok(())
    } else {
        Err(missing_or_stale::<T>(tx, id).await)
    }
}

/// Explains why a guarded `UPDATE`/`DELETE` touched no row: the record is gone (or was never
/// this tenant's), or its version moved on.
async fn missing_or_stale<T: TenantScoped>(tx: &mut TenantTx, id: T::Id) -> Error {
    match T::find(tx, id).await {
        Ok(Some(current)) => Error::VersionMismatch {
            current: current.version(),
        },
        Ok(None) => Error::NotFound,
        Err(err) => err,
    }
}

/// Deserializes a field that distinguishes "absent" (`None`) from "null" (`Some(None)`), for
/// patches that may clear a value: `#[serde(default, deserialize_with = "double_option")]`.
///
/// # Errors
/// The inner type's deserialization errors.
pub fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    serde::Deserialize::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::Visibility;

    #[test]
    fn a_viewer_who_sees_all_skips_only_guaranteed_parents() {
        let parent = |enforced| Visibility::Parent {
            table: "projects",
            key: "project_id",
            enforced,
        };
        assert_eq!(parent(true).condition("tasks", true, 3), "");
        assert!(!parent(true).has_parameters(true));
        let unguaranteed = parent(false).condition("files", true, 3);
        assert!(unguaranteed.contains("EXISTS (SELECT 1 FROM projects parent"));
        assert!(!unguaranteed.contains("$3"), "{unguaranteed}");
        for enforced in [true, false] {
            let restricted = parent(enforced).condition("tasks", false, 3);
            assert!(restricted.contains("parent.restricted"), "{restricted}");
            assert!(restricted.contains("tm.user_id = $3"), "{restricted}");
            assert!(parent(enforced).has_parameters(false));
        }
        assert_eq!(Visibility::Team.condition("projects", true, 1), "");
        assert_eq!(Visibility::Tenant.condition("notes", false, 1), "");
    }
}
