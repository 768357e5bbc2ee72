-- Row-level-security helpers for the tenant tables of every crate, and the wall around
-- invitations.

-- Whether the current transaction is the system's own (tenantkit's SystemTx sets
-- app.system for that transaction only).
CREATE FUNCTION tenantkit_is_system() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(current_setting('app.system', true), '') = 'on' $$;
GRANT EXECUTE ON FUNCTION tenantkit_is_system() TO tenantkit_app;

-- Puts a tenant table (one with a tenant_id column) behind row-level security: ENABLE and
-- FORCE (so the owner is bound too), and the tenant policy, which reads and writes only the
-- rows of the transaction's tenant. Call it in the migration that creates the table:
--     SELECT tenantkit_enable_tenant_rls('notes');
-- tenantkit refuses to start when a table with a tenant_id column is not behind RLS.
CREATE FUNCTION tenantkit_enable_tenant_rls(tbl regclass) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON %s '
        'USING (tenant_id = tenantkit_current_tenant()) '
        'WITH CHECK (tenant_id = tenantkit_current_tenant())', tbl);
END
$$;

-- Lets system transactions (no tenant) read and change a tenant table's rows, for tables
-- whose rows must be found before their tenant is known (login sessions, by the hash of a
-- refresh token). Tenant-scoped transactions still see only their tenant's rows.
CREATE FUNCTION tenantkit_allow_system_access(tbl regclass) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    EXECUTE format(
        'CREATE POLICY system_access ON %s '
        'USING (tenantkit_is_system()) WITH CHECK (tenantkit_is_system())', tbl);
END
$$;

REVOKE ALL ON FUNCTION tenantkit_enable_tenant_rls(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantkit_allow_system_access(regclass) FROM PUBLIC;

-- Invitations are tenant rows: emails and roles of one tenant are no other tenant's business.
SELECT tenantkit_enable_tenant_rls('invitations');

-- Accepting an invitation finds it by the hash of its token, before its tenant is known. The
-- application role cannot read invitations outside a tenant's scope; it calls this narrow
-- function instead, which runs as the table owner (the only role the owner_lookup policy
-- applies to; the start-up check refuses an application role that is, or is a member of, the
-- owner) with a pinned search_path, in the schema of the table, and returns at most the one
-- open invitation whose token hash the caller already holds.
DO $$
DECLARE
    owner name := (SELECT tableowner FROM pg_catalog.pg_tables
                   WHERE schemaname = current_schema() AND tablename = 'invitations');
BEGIN
    EXECUTE format(
        'CREATE POLICY owner_lookup ON %I.invitations FOR SELECT TO %I USING (true)',
        current_schema(), owner);
    EXECUTE format(
        'CREATE FUNCTION %1$I.tenantkit_open_invitation(hash bytea, at timestamptz) '
        'RETURNS SETOF %1$I.invitations '
        'LANGUAGE sql STABLE SECURITY DEFINER '
        'SET search_path = pg_catalog, pg_temp '
        'AS $f$ SELECT * FROM %1$I.invitations '
        'WHERE token_hash = hash AND accepted_at IS NULL AND expires_at > at $f$',
        current_schema());
    EXECUTE format(
        'ALTER FUNCTION %I.tenantkit_open_invitation(bytea, timestamptz) OWNER TO %I',
        current_schema(), owner);
    EXECUTE format(
        'REVOKE ALL ON FUNCTION %I.tenantkit_open_invitation(bytea, timestamptz) FROM PUBLIC',
        current_schema());
    EXECUTE format(
        'GRANT EXECUTE ON FUNCTION %I.tenantkit_open_invitation(bytea, timestamptz) '
        'TO tenantkit_app', current_schema());
END
$$;
