-- A second factor per account (RFC 6238 TOTP), its recovery codes, and the sign-ins waiting for
-- it. Accounts are not tenant rows: these tables are read in system transactions only.
--
-- mfa_totp: the seed sealed with the server's secret key (tenantkit-core's secret box, bound to
-- the user id), NULL `confirmed_at` until a first code proved the authenticator has it, and the
-- last time step a code was accepted for (a code is accepted at most once).
CREATE TABLE mfa_totp (
    user_id       uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret        text NOT NULL,
    created_at    timestamptz NOT NULL,
    confirmed_at  timestamptz,
    last_step     bigint NOT NULL DEFAULT 0
);
-- Single-use recovery codes, stored as SHA-256 (they are random: no slow hash is needed).
CREATE TABLE mfa_recovery_codes (
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  bytea NOT NULL,
    used_at    timestamptz,
    PRIMARY KEY (user_id, code_hash)
);
-- A sign-in whose password was right, waiting for its second factor: the hash of the token
-- the client holds, what the session will be (tenant, credentials epoch, methods so far), a
-- short expiry and a count of wrong codes.
CREATE TABLE mfa_challenges (
    token_hash         bytea PRIMARY KEY,
    user_id            uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tenant_id          uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    credentials_epoch  bigint NOT NULL,
    amr                text NOT NULL,
    expires_at         timestamptz NOT NULL,
    attempts           integer NOT NULL DEFAULT 0
);
CREATE INDEX mfa_challenges_user_idx ON mfa_challenges (user_id);

GRANT SELECT, INSERT, UPDATE, DELETE ON mfa_totp, mfa_recovery_codes, mfa_challenges TO tenantkit_app;
