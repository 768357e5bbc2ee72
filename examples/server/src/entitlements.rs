//! The plan's entitlements where the other crates enforce them: seats for tenantkit-auth's
//! invitations, storage bytes for tenantkit-storage's quota.

use tenantkit_billing::PlanBook;
use tenantkit_core::TenantTx;

/// Seats from the tenant's plan.
#[derive(Debug, Clone)]
pub(crate) struct Seats(pub(crate) PlanBook);

impl tenantkit_auth::flows::SeatLimit for Seats {
    fn seats<'a>(
        &'a self,
        tx: &'a mut TenantTx,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = tenantkit_core::Result<Option<u64>>> + Send + 'a>,
    > {
        Box::pin(async move { Ok(self.0.status(tx).await?.entitlements.seats) })
    }
}

/// Storage bytes from the tenant's plan.
#[derive(Debug, Clone)]
pub(crate) struct StorageQuota(pub(crate) PlanBook);

impl tenantkit_storage::QuotaSource for StorageQuota {
    fn storage_quota<'a>(
        &'a self,
        tx: &'a mut TenantTx,
    ) -> tenantkit_storage::BoxFuture<'a, tenantkit_storage::Result<Option<u64>>> {
        Box::pin(async move { Ok(self.0.status(tx).await?.entitlements.storage_bytes) })
    }
}
