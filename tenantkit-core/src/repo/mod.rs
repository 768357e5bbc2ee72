//! Repositories over tenant-owned tables.

pub(crate) mod projects;
pub(crate) mod tasks;

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
/// Implement it for your own tables with [`TenantTx::raw`]:
///
/// ```ignore
/// impl TenantScoped for Invoice {
///     // ... `SELECT ... FROM invoices WHERE tenant_id = $1 AND id = $2`,
///     //     binding `tx.tenant_id()` first in every query.
/// }
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

    /// Applies `patch` if the record is still at version `expected`; the version then grows by 1.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::VersionMismatch`] when someone else changed it first,
    /// [`Error::Validation`] when the patched record would be invalid.
    fn update(
        tx: &mut TenantTx,
        id: Self::Id,
        expected: Version,
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

/// Explains why a guarded `UPDATE`/`DELETE` touched no row: the record is gone (or was never
/// this tenant's), or its version moved on.
pub(crate) async fn missing_or_stale<T: TenantScoped>(tx: &mut TenantTx, id: T::Id) -> Error {
    match T::find(tx, id).await {
        Ok(Some(current)) => Error::VersionMismatch {
            current: current.version(),
        },
        Ok(None) => Error::NotFound,
        Err(err) => err,
    }
}

/// Checks the version a client read against the current one before applying a patch.
pub(crate) fn expect_version(current: Version, expected: Version) -> Result<()> {
    if current == expected {
        Ok(())
    } else {
        Err(Error::VersionMismatch { current })
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
