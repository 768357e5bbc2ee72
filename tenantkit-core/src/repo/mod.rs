//! Repositories over tenant-owned tables: the [`TenantScoped`] trait every such record
//! implements, the [`TenantTable`] helper that writes their common queries once, and the
//! [`Visibility`] rule for team-restricted rows.

pub(crate) mod teams;

use std::fmt::Debug;
use std::future::Future;

use uuid::Uuid;

use crate::sql::Row;
use crate::{Error, Page, PageRequest, Result, TenantTx, Version, with_conn};

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

/// A column value for [`TenantTable::insert`], typed even when it is `NULL` (PostgreSQL checks
/// a parameter's type against its column's). Made with `into()` from a value or an `Option`
/// of one, and with [`Value::id`] from an id.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Value<'a> {
    /// A UUID (tenantkit's ids).
    Uuid(Option<Uuid>),
    /// Text.
    Text(Option<&'a str>),
    /// A 64-bit integer.
    Int(Option<i64>),
    /// A boolean.
    Bool(Option<bool>),
    /// A point in time.
    Time(Option<time::OffsetDateTime>),
}

impl Value<'_> {
    /// An id (anything that is a UUID, such as the types of [`define_id!`](crate::define_id)).
    pub fn id(id: impl Into<Uuid>) -> Self {
        Value::Uuid(Some(id.into()))
    }
}

macro_rules! value_from {
    ($($variant:ident: $type:ty),+) => {$(
        impl<'a> From<$type> for Value<'a> {
            fn from(value: $type) -> Self {
                Value::$variant(Some(value.into()))
            }
        }
        impl<'a> From<Option<$type>> for Value<'a> {
            fn from(value: Option<$type>) -> Self {
                Value::$variant(value.map(Into::into))
            }
        }
    )+};
}

value_from!(Uuid: Uuid, Text: &'a str, Int: i64, Int: i32, Bool: bool);
value_from!(Time: time::OffsetDateTime, Int: Version);
value_from!(Uuid: crate::UserId, Uuid: crate::TeamId);

/// A tenant-owned table: its name, the columns its row type decodes, and which rows a
/// team-restricted viewer reaches. The strings are constants of your code, never input, so
/// they may be spliced into SQL. Every table has `id` (its key) and `tenant_id` columns.
#[derive(Debug, Clone, Copy)]
pub struct TenantTable {
    /// The table name.
    pub name: &'static str,
    /// The comma-separated columns of its row type.
    pub columns: &'static str,
    /// Which rows a viewer reaches.
    pub visibility: Visibility,
}

impl TenantTable {
    /// Inserts a row into the transaction's tenant and returns it: `values` are those of
    /// [`columns`](Self::columns), in their order; `tenant_id` is the transaction's, never a
    /// value of the caller.
    ///
    /// ```ignore
    /// // columns: "id, author, body"
    /// let note: Note = NOTES.insert(&mut tx, &[Value::id(id), author.into(), body.into()]).await?;
    /// ```
    ///
    /// # Errors
    /// [`Error::Database`] on failure: a constraint, or not one value per column.
    pub async fn insert<R: Row>(&self, tx: &mut TenantTx, values: &[Value<'_>]) -> Result<R> {
        let parameters: Vec<String> = (2..values.len() + 2).map(|i| format!("${i}")).collect();
        let sql = format!(
            "INSERT INTO {0} (tenant_id, {1}) VALUES ($1, {2}) RETURNING {1}",
            self.name,
            self.columns,
            parameters.join(", ")
        );
        let tenant = tx.tenant_id();
        Ok(with_conn!(tx, |c| {
            let mut query = sqlx::query_as::<_, R>(&sql).bind(tenant);
            for value in values {
                query = match *value {
                    Value::Uuid(v) => query.bind(v),
                    Value::Text(v) => query.bind(v),
                    Value::Int(v) => query.bind(v),
                    Value::Bool(v) => query.bind(v),
                    Value::Time(v) => query.bind(v),
                };
            }
            query.fetch_one(c).await
        })?)
    }

    /// Reads the row `id` of the transaction's tenant, if the transaction may see it.
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    pub async fn find<R: Row>(&self, tx: &mut TenantTx, id: Uuid) -> Result<Option<R>> {
        let (tenant, all, viewer) = (tx.tenant_id(), tx.sees_all_teams(), tx.viewer());
        let sql = format!(
            "SELECT {} FROM {} WHERE tenant_id = $1 AND id = $2{}",
            self.columns,
            self.name,
            self.visibility.condition(self.name, all, 3)
        );
        Ok(with_conn!(tx, |c| {
            bind_visibility!(
                sqlx::query_as(&sql).bind(tenant).bind(id),
                self.visibility,
                all,
                viewer
            )
            .fetch_optional(c)
            .await
        })?)
    }

    /// Whether the row `id` exists in the transaction's tenant and the transaction may see it.
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    pub async fn contains(&self, tx: &mut TenantTx, id: Uuid) -> Result<bool> {
        let (tenant, all, viewer) = (tx.tenant_id(), tx.sees_all_teams(), tx.viewer());
        let sql = format!(
            "SELECT 1 FROM {} WHERE tenant_id = $1 AND id = $2{}",
            self.name,
            self.visibility.condition(self.name, all, 3)
        );
        let found: Option<i32> = with_conn!(tx, |c| {
            bind_visibility!(
                sqlx::query_scalar(&sql).bind(tenant).bind(id),
                self.visibility,
                all,
                viewer
            )
            .fetch_optional(c)
            .await
        })?;
        Ok(found.is_some())
    }

    /// One page of the rows of the transaction's tenant that the transaction may see, in `id`
    /// order (creation order for tenantkit's time-ordered ids); `key` reads a row's id, which
    /// becomes the next page's cursor.
    ///
    /// # Errors
    /// [`Error::Database`] on failure.
    pub async fn list<R: Row>(
        &self,
        tx: &mut TenantTx,
        page: &PageRequest,
        key: impl Fn(&R) -> Uuid,
    ) -> Result<Page<R>> {
        let (tenant, all, viewer) = (tx.tenant_id(), tx.sees_all_teams(), tx.viewer());
        let sql = format!(
            "SELECT {} FROM {} WHERE tenant_id = $1 AND id > $2{} ORDER BY id LIMIT $3",
            self.columns,
            self.name,
            self.visibility.condition(self.name, all, 4)
        );
        let (after, count) = (page.after_key(), page.fetch_count());
        let rows: Vec<R> = with_conn!(tx, |c| {
            bind_visibility!(
                sqlx::query_as(&sql).bind(tenant).bind(after).bind(count),
                self.visibility,
                all,
                viewer
            )
            .fetch_all(c)
            .await
        })?;
        Ok(Page::from_rows(rows, page, key))
    }

    /// Deletes the row `id` of the transaction's tenant (if `expected` is given, only at that
    /// version), if the transaction may see it; explains a miss as not found or stale.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::VersionMismatch`], [`Error::Database`].
    pub async fn delete<T>(
        &self,
        tx: &mut TenantTx,
        id: T::Id,
        expected: Option<Version>,
    ) -> Result<()>
    where
        T: TenantScoped,
        T::Id: Into<Uuid>,
    {
        let deleted = self.delete_rows(tx, id.into(), expected).await?;
        ensure_written::<T>(tx, id, deleted).await
    }

    /// Deletes the row `id` of the transaction's tenant, if the transaction may see it: for a
    /// table without versions or a [`TenantScoped`] type.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such row (or another tenant's, or one the
    /// transaction may not see), [`Error::Database`].
    pub async fn remove(&self, tx: &mut TenantTx, id: Uuid) -> Result<()> {
        match self.delete_rows(tx, id, None).await? {
            0 => Err(Error::NotFound),
            _ => Ok(()),
        }
    }

    async fn delete_rows(
        &self,
        tx: &mut TenantTx,
        key: Uuid,
        expected: Option<Version>,
    ) -> Result<u64> {
        let (tenant, all, viewer) = (tx.tenant_id(), tx.sees_all_teams(), tx.viewer());
        let version_check = if expected.is_some() {
            " AND version = $3"
        } else {
            ""
        };
        let sql = format!(
            "DELETE FROM {} WHERE tenant_id = $1 AND id = $2{version_check}{}",
            self.name,
            self.visibility
                .condition(self.name, all, if expected.is_some() { 4 } else { 3 })
        );
        Ok(with_conn!(tx, |c| {
            let query = sqlx::query(&sql).bind(tenant).bind(key);
            let query = match expected {
                Some(version) => query.bind(version),
                None => query,
            };
            bind_visibility!(query, self.visibility, all, viewer)
                .execute(c)
                .await
                .map(|done| done.rows_affected())
        })?)
    }
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
