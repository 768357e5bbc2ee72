-- A tenant's sign-in policy, set by its owner: `mfa_required` makes every sign-in into the
-- tenant give a second factor (an account without one must enroll first). No row: no policy.
-- Tenant rows behind row-level security; sign-ins read them in system transactions (the
-- tenant is not the caller's yet).
CREATE TABLE tenant_auth_policies (
    tenant_id     uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    mfa_required  boolean NOT NULL DEFAULT false,
    updated_at    timestamptz NOT NULL
);
GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_auth_policies TO tenantkit_app;
SELECT tenantkit_enable_tenant_rls('tenant_auth_policies');
SELECT tenantkit_allow_system_access('tenant_auth_policies');
-- What a pending sign-in waits for: `verify` (a code of the account's second factor) or
-- `enroll` (the tenant requires one and the account has none: its token can only enroll).
ALTER TABLE mfa_challenges ADD COLUMN purpose text NOT NULL DEFAULT 'verify';
