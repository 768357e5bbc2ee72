//! [`TenantTable`]: the common queries of a tenant-owned table written once (insert, find,
//! contains, list, delete, remove), each confined to the transaction's tenant and to the rows
//! its viewer may see.

use uuid::Uuid;

use super::{TenantScoped, Visibility, ensure_written};
use crate::sql::Row;
use crate::{Error, Page, PageRequest, Result, TenantTx, Version, bind_visibility, with_conn};

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
