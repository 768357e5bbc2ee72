//! Repositories over tenant-owned tables.

pub(crate) mod projects;
pub(crate) mod tasks;
pub(crate) mod teams;

use std::fmt::Debug;
use std::future::Future;

use uuid::Uuid;

use crate::scope::scoped;
use crate::{Error, Page, PageRequest, Result, TenantTx, Version};

/// A record type owned by a tenant, with the repository operations every such table offers.
///
/// Every method takes a [`TenantTx`], so no code can read or write these rows without a tenant
/// scope; each implementation filters by [`TenantTx::tenant_id`]. Another tenant's record is
/// indistinguishable from a missing one: `find` gives `Ok(None)`, `update` and `delete` give
/// [`Error::NotFound`].
///
/// Implement it for your own tables with [`TenantTx::raw`], binding [`TenantTx::tenant_id`]
/// in every query (on PostgreSQL, give the table the same row-level-security policy as the
/// built-in ones). A complete example, on SQLite:
///
/// ```
/// use tenantkit_core::{
///     Database, Error, NewTenant, Page, PageRequest, RawConn, Result, TenantScope,
///     TenantScoped, TenantTx, Version,
/// };
///
/// #[derive(Debug, PartialEq, sqlx::FromRow)]
/// struct Note { id: i64, body: String, version: Version }
///
/// fn sqlite(tx: &mut TenantTx) -> Result<&mut sqlx::SqliteConnection> {
///     match tx.raw() {
///         RawConn::Sqlite(conn) => Ok(conn),
///         _ => Err(Error::Config("notes are stored in SQLite".into())),
///     }
/// }
///
/// impl TenantScoped for Note {
///     type Id = i64;
///     type New = String;
///     type Patch = String;
///     type Filter = ();
///
///     fn id(&self) -> i64 { self.id }
///     fn version(&self) -> Version { self.version }
///
///     async fn create(tx: &mut TenantTx, body: String) -> Result<Self> {
///         let tenant = tx.tenant_id();
///         Ok(sqlx::query_as("INSERT INTO notes (tenant_id, body, version) VALUES ($1, $2, 1) \
///                            RETURNING id, body, version")
///             .bind(tenant).bind(body).fetch_one(sqlite(tx)?).await?)
///     }
///     async fn find(tx: &mut TenantTx, id: i64) -> Result<Option<Self>> {
///         let tenant = tx.tenant_id();
///         Ok(sqlx::query_as("SELECT id, body, version FROM notes WHERE tenant_id = $1 AND id = $2")
///             .bind(tenant).bind(id).fetch_optional(sqlite(tx)?).await?)
///     }
///     async fn update(tx: &mut TenantTx, id: i64, expected: Option<Version>, body: String) -> Result<Self> {
///         let tenant = tx.tenant_id();
///         let updated: Option<Note> = sqlx::query_as(
///             "UPDATE notes SET body = $1, version = version + 1 \
///              WHERE tenant_id = $2 AND id = $3 AND ($4 IS NULL OR version = $4) RETURNING id, body, version")
///             .bind(body).bind(tenant).bind(id).bind(expected)
///             .fetch_optional(sqlite(tx)?).await?;
///         match updated {
///             Some(note) => Ok(note),
///             None => match Self::find(tx, id).await? {
///                 Some(current) => Err(Error::VersionMismatch { current: current.version }),
///                 None => Err(Error::NotFound),
///             },
///         }
///     }
///     async fn delete(tx: &mut TenantTx, id: i64, _expected: Option<Version>) -> Result<()> {
///         let tenant = tx.tenant_id();
///         let done = sqlx::query("DELETE FROM notes WHERE tenant_id = $1 AND id = $2")
///             .bind(tenant).bind(id).execute(sqlite(tx)?).await?;
///         if done.rows_affected() == 0 { Err(Error::NotFound) } else { Ok(()) }
///     }
///     async fn list(tx: &mut TenantTx, _: &(), page: PageRequest) -> Result<Page<Self>> {
///         let tenant = tx.tenant_id();
///         let items = sqlx::query_as("SELECT id, body, version FROM notes WHERE tenant_id = $1 \
///                                     ORDER BY id LIMIT $2")
///             .bind(tenant).bind(i64::from(page.limit.get()))
///             .fetch_all(sqlite(tx)?).await?;
///         Ok(Page { items, next_cursor: None })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<()> {
/// let db = Database::connect("sqlite::memory:").await?;
/// db.migrate().await?;
/// let (tenant, mut tx) = db.create_tenant(NewTenant { name: "Acme".into(), slug: None }).await?;
/// sqlx::query("CREATE TABLE notes (id INTEGER PRIMARY KEY, tenant_id BLOB NOT NULL, \
///              body TEXT NOT NULL, version INTEGER NOT NULL)")
///     .execute(sqlite(&mut tx)?).await?;
/// let note = Note::create(&mut tx, "hello".into()).await?;
/// let note = Note::update(&mut tx, note.id, Some(note.version), "hello, world".into()).await?;
/// assert_eq!(note.version, Version::new(2));
/// tx.commit().await?;
///
/// // Another tenant cannot see it.
/// let (_, mut other) = db.create_tenant(NewTenant { name: "Globex".into(), slug: None }).await?;
/// assert_eq!(Note::find(&mut other, note.id).await?, None);
/// # let _ = (tenant, TenantScope::for_system);
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

/// A row type that decodes on every enabled backend.
pub(crate) trait Row: SqliteRow + PgRow + Send + Unpin {}
impl<T: SqliteRow + PgRow + Send + Unpin> Row for T {}

#[cfg(feature = "sqlite")]
pub(crate) trait SqliteRow: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> {}
#[cfg(feature = "sqlite")]
impl<T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>> SqliteRow for T {}
#[cfg(not(feature = "sqlite"))]
pub(crate) trait SqliteRow {}
#[cfg(not(feature = "sqlite"))]
impl<T> SqliteRow for T {}

#[cfg(feature = "postgres")]
pub(crate) trait PgRow: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> {}
#[cfg(feature = "postgres")]
impl<T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>> PgRow for T {}
#[cfg(not(feature = "postgres"))]
pub(crate) trait PgRow {}
#[cfg(not(feature = "postgres"))]
impl<T> PgRow for T {}

/// Which rows of a table a transaction that does not see everything may reach, inside its
/// tenant (see [`crate::TenantScope::sees_all_projects`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Restriction {
    /// Every row of the tenant.
    None,
    /// The table is `projects`: unrestricted ones, and restricted ones of the viewer's teams.
    Project,
    /// The rows hang off a project by `project_id`, and share its restriction.
    InProject,
}

/// SQL that holds when the `projects` row aliased `p` is visible: `$all` is bound to whether
/// the transaction sees everything, `$user` to its viewer.
pub(crate) fn project_visible(p: &str, all: usize, user: usize) -> String {
    format!(
        "(NOT {p}.restricted OR ${all} OR EXISTS (SELECT 1 FROM team_members tm \
         WHERE tm.tenant_id = {p}.tenant_id AND tm.team_id = {p}.team_id AND tm.user_id = ${user}))"
    )
}

impl Restriction {
    /// ` AND <condition>` limiting `table` to what the transaction may see, with its two
    /// parameters numbered `all` and `user` (bound by `bind_reach!`); empty for `None`.
    pub(crate) fn condition(self, table: &str, all: usize, user: usize) -> String {
        match self {
            Restriction::None => String::new(),
            Restriction::Project => format!(" AND {}", project_visible(table, all, user)),
            Restriction::InProject => format!(
                " AND EXISTS (SELECT 1 FROM projects p WHERE p.tenant_id = {table}.tenant_id \
                 AND p.id = {table}.project_id AND {})",
                project_visible("p", all, user)
            ),
        }
    }
}

/// Binds the two parameters of a [`Restriction::condition`] to a query when the restriction
/// has any.
macro_rules! bind_reach {
    ($query:expr, $restriction:expr, $tx_all:expr, $tx_viewer:expr) => {{
        let query = $query;
        if $restriction == $crate::repo::Restriction::None {
            query
        } else {
            query.bind($tx_all).bind($tx_viewer)
        }
    }};
}

/// A tenant-owned table: its name, the columns its row type decodes and which rows a
/// restricted viewer reaches. The strings are constants of this crate, never input, so they
/// may be spliced into SQL.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Table {
    pub(crate) name: &'static str,
    pub(crate) columns: &'static str,
    pub(crate) restriction: Restriction,
}

impl Table {
    /// Reads the row `id` of the transaction's tenant, if the transaction may see it.
    pub(crate) async fn find<R: Row>(&self, tx: &mut TenantTx, id: Uuid) -> Result<Option<R>> {
        let (tenant, all, viewer) = (tx.tenant_id(), tx.sees_all_projects(), tx.viewer());
        let sql = format!(
            "SELECT {} FROM {} WHERE tenant_id = $1 AND id = $2{}",
            self.columns,
            self.name,
            self.restriction.condition(self.name, 3, 4)
        );
        Ok(scoped!(tx, |c| {
            bind_reach!(
                sqlx::query_as(&sql).bind(tenant).bind(id),
                self.restriction,
                all,
                viewer
            )
            .fetch_optional(c)
            .await
        })?)
    }

    /// Whether the row `id` exists in the transaction's tenant and the transaction may see it.
    pub(crate) async fn contains(&self, tx: &mut TenantTx, id: Uuid) -> Result<bool> {
        let (tenant, all, viewer) = (tx.tenant_id(), tx.sees_all_projects(), tx.viewer());
        let sql = format!(
            "SELECT 1 FROM {} WHERE tenant_id = $1 AND id = $2{}",
            self.name,
            self.restriction.condition(self.name, 3, 4)
        );
        let found: Option<i32> = scoped!(tx, |c| {
            bind_reach!(
                sqlx::query_scalar(&sql).bind(tenant).bind(id),
                self.restriction,
                all,
                viewer
            )
            .fetch_optional(c)
            .await
        })?;
        Ok(found.is_some())
    }

    /// Deletes the row `id` of the transaction's tenant, if `expected` is given only at that
    /// version; explains a miss as not-found or stale.
    pub(crate) async fn delete<T>(
        &self,
        tx: &mut TenantTx,
        id: T::Id,
        expected: Option<Version>,
    ) -> Result<()>
    where
        T: TenantScoped,
        T::Id: Into<Uuid>,
    {
        let (tenant, all, viewer) = (tx.tenant_id(), tx.sees_all_projects(), tx.viewer());
        let sql = format!(
            "DELETE FROM {} WHERE tenant_id = $1 AND id = $2 AND ($3 IS NULL OR version = $3){}",
            self.name,
            self.restriction.condition(self.name, 4, 5)
        );
        let key: Uuid = id.into();
        let deleted = scoped!(tx, |c| {
            bind_reach!(
                sqlx::query(&sql).bind(tenant).bind(key).bind(expected),
                self.restriction,
                all,
                viewer
            )
            .execute(c)
            .await
            .map(|done| done.rows_affected())
        })?;
        ensure_written::<T>(tx, id, deleted).await
    }
}

/// Reads the record `id` to change it: it must be there (and visible to the transaction)
/// and, when the client sent the version it read, still at that version.
pub(crate) async fn read_for_update<T: TenantScoped>(
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
pub(crate) async fn ensure_written<T: TenantScoped>(
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
/// patches that may clear a value.
pub(crate) fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    serde::Deserialize::deserialize(deserializer).map(Some)
}
