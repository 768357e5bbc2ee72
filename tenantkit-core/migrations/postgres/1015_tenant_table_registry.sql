-- The registry of tenant tables the start-up check covers: the tables put behind row-level
-- security by tenantkit's migration sets (tenantkit_enable_tenant_rls registers them) and any
-- table the application registers in its own migrations:
--     SELECT tenantkit_enable_tenant_rls('notes');      -- registers, ENABLE + FORCE, policy
--     SELECT tenantkit_register_tenant_table('notes');  -- registers only (checked, not fixed)
-- Other tables of the schema (an existing application's own, even with a tenant_id column)
-- are the application's business: they do not stop start-up.
CREATE TABLE tenantkit_tenant_tables (
    relid regclass PRIMARY KEY
);
GRANT SELECT ON tenantkit_tenant_tables TO tenantkit_app;

CREATE FUNCTION tenantkit_register_tenant_table(tbl regclass) RETURNS void
    LANGUAGE sql
    AS $$ INSERT INTO tenantkit_tenant_tables (relid) VALUES (tbl) ON CONFLICT DO NOTHING $$;
REVOKE ALL ON FUNCTION tenantkit_register_tenant_table(regclass) FROM PUBLIC;

CREATE OR REPLACE FUNCTION tenantkit_enable_tenant_rls(tbl regclass) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM tenantkit_register_tenant_table(tbl);
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON %s '
        'USING (tenant_id = tenantkit_current_tenant()) '
        'WITH CHECK (tenant_id = tenantkit_current_tenant())', tbl);
END
$$;

-- Every table already behind a tenant policy (tenantkit's own, made by the migrations applied
-- before this one, and the application's made with tenantkit_enable_tenant_rls) is registered.
INSERT INTO tenantkit_tenant_tables (relid)
SELECT c.oid::regclass
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
  AND EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid
              AND pg_catalog.pg_get_expr(p.polqual, p.polrelid) LIKE '%tenantkit_current_tenant()%')
ON CONFLICT DO NOTHING;
