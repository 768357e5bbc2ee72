-- A second factor per account (RFC 6238 TOTP), its recovery codes, and the sign-ins waiting for
-- it. Accounts are not tenant rows: these tables are read in system transactions only.
--
-- mfa_totp: the seed sealed with the server's secret key (tenantkit-core's secret box, bound to
-- the user id), NULL `confirmed_at` until a first code proved the authenticator has it, and the
-- last time step a code was accepted for (a code is accepted at most once).
CREATE TABLE mfa_totp (
    user_id       BLOB PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    secret        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    confirmed_at  TEXT,
    last_step     INTEGER NOT NULL DEFAULT 0
);
-- Single-use recovery codes, stored as SHA-256 (they are random: no slow hash is needed).
CREATE TABLE mfa_recovery_codes (
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  BLOB NOT NULL,
    used_at    TEXT,
    PRIMARY KEY (user_id, code_hash)
);
-- A sign-in whose password was right, waiting for its second factor: the hash of the token
-- the client holds, what the session will be (tenant, credentials epoch, methods so far), a
-- short expiry and a count of wrong codes.
CREATE TABLE mfa_challenges (
    token_hash         BLOB PRIMARY KEY NOT NULL,
    user_id            BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tenant_id          BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    credentials_epoch  INTEGER NOT NULL,
    amr                TEXT NOT NULL,
    expires_at         TEXT NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX mfa_challenges_user_idx ON mfa_challenges (user_id);
