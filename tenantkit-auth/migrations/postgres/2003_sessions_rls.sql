-- Sessions carry their tenant: behind row-level security like every tenant table. A refresh
-- token is looked up by its hash before its tenant is known, so system transactions may
-- reach sessions too; tenant-scoped work sees only its own tenant's sessions.
SELECT tenantkit_enable_tenant_rls('sessions');
SELECT tenantkit_allow_system_access('sessions');
