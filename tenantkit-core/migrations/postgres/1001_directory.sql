-- tenantkit-core: the directory (PostgreSQL): tenants, users, memberships, and the settings
-- row-level security reads. Split from wave-1 migration 1 (which also held the example
-- domain); statements unchanged.
--
-- Run by the OWNER role. The application connects as a different role that is a member of
-- `tenantkit_app`: not a superuser, not BYPASSRLS, not the owner, so the row-level security
-- below is a second wall behind the application's own tenant filter.

-- The privileges the application needs are granted to this group role. If the owner may not
-- create roles, an administrator creates it first: CREATE ROLE tenantkit_app NOLOGIN;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tenantkit_app') THEN
        CREATE ROLE tenantkit_app NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL; -- created concurrently
END
$$;

-- The tenant and user of the current transaction, set by the application with
-- set_config('app.tenant_id' / 'app.user_id', ..., true). Unset or empty means NULL,
-- which matches no row.
CREATE FUNCTION tenantkit_current_tenant() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$;

CREATE FUNCTION tenantkit_current_user() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('app.user_id', true), '')::uuid $$;

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    slug        text NOT NULL UNIQUE,
    name        text NOT NULL,
    plan        text NOT NULL DEFAULT 'free',
    created_at  timestamptz NOT NULL
);

CREATE TABLE users (
    id                 uuid PRIMARY KEY,
    email              text NOT NULL,
    password_hash      text,
    email_verified_at  timestamptz,
    created_at         timestamptz NOT NULL
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE memberships (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role        text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX memberships_user_idx ON memberships (user_id);

-- A membership is visible to its tenant, and to its own user (to list their tenants at
-- login); it is inserted, changed and deleted only inside its tenant's scope. (Separate
-- policies: a user-scoped transaction must never be able to delete memberships elsewhere.)
ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON memberships
    USING (tenant_id = tenantkit_current_tenant())
    WITH CHECK (tenant_id = tenantkit_current_tenant());
CREATE POLICY own_memberships_readable ON memberships FOR SELECT
    USING (user_id = tenantkit_current_user());

GRANT USAGE ON SCHEMA public TO tenantkit_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON tenants, users, memberships TO tenantkit_app;
GRANT EXECUTE ON FUNCTION tenantkit_current_tenant(), tenantkit_current_user() TO tenantkit_app;
