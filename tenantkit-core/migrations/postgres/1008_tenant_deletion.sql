-- Tenants are deleted softly (members removed, sessions ended, the row and its audit chain
-- kept), by an explicit, audited operation: the application role may no longer delete tenant
-- rows at all, and the tenants table is behind row-level security like every tenant table. A
-- tenant-scoped transaction sees and changes only its own tenant; the system's transactions
-- may read every tenant (login resolves a slug before its tenant is known).
ALTER TABLE tenants ADD COLUMN deleted_at timestamptz;
REVOKE DELETE, TRUNCATE ON tenants FROM tenantkit_app;
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_self ON tenants
    USING (id = tenantkit_current_tenant())
    WITH CHECK (id = tenantkit_current_tenant());
CREATE POLICY system_read ON tenants FOR SELECT USING (tenantkit_is_system());
