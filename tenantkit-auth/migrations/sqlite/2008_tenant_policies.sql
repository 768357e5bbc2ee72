-- A tenant's sign-in policy, set by its owner: `mfa_required` makes every sign-in into the
-- tenant give a second factor (an account without one must enroll first). No row: no policy.
CREATE TABLE tenant_auth_policies (
    tenant_id     BLOB PRIMARY KEY NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    mfa_required  INTEGER NOT NULL DEFAULT 0,
    updated_at    TEXT NOT NULL
);
-- What a pending sign-in waits for: `verify` (a code of the account's second factor) or
-- `enroll` (the tenant requires one and the account has none: its token can only enroll).
ALTER TABLE mfa_challenges ADD COLUMN purpose TEXT NOT NULL DEFAULT 'verify';
