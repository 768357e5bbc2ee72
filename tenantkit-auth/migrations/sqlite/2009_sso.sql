-- Single sign-on (feature `sso`; the tables exist either way, so enabling it later needs no
-- migration).
--
-- sso_connections: a tenant's OpenID Connect providers. The client secret is sealed with the
-- server's secret key (bound to the connection id). One connection per issuer and tenant.
CREATE TABLE sso_connections (
    id             BLOB PRIMARY KEY NOT NULL,
    tenant_id      BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    issuer         TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    client_secret  TEXT NOT NULL,
    default_role   TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    UNIQUE (tenant_id, issuer)
);
CREATE INDEX sso_connections_tenant_idx ON sso_connections (tenant_id);
-- The email domains a tenant claims for just-in-time membership, with the token of the DNS
-- record that proves one; `verified_at` once proven. A domain is verified for one tenant only,
-- and its addresses join through the connection that claimed it only (another connection an
-- admin adds later does not inherit it).
CREATE TABLE sso_domains (
    tenant_id     BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    domain        TEXT NOT NULL,
    connection_id BLOB REFERENCES sso_connections (id) ON DELETE SET NULL,
    dns_token     TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    verified_at   TEXT,
    PRIMARY KEY (tenant_id, domain)
);
CREATE UNIQUE INDEX sso_domains_verified_idx ON sso_domains (domain) WHERE verified_at IS NOT NULL;
-- Accounts linked to a provider's subject: (issuer, subject) names one account, never an
-- email address.
CREATE TABLE sso_identities (
    issuer      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    user_id     BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX sso_identities_user_idx ON sso_identities (user_id);
-- Logins sent to a provider and not back yet: the hash of `state`, the hash of the browser
-- cookie it is bound to, the nonce, the PKCE verifier (sealed), where to go after, the account
-- a link was asked for by, expiry.
CREATE TABLE sso_logins (
    state_hash     BLOB PRIMARY KEY NOT NULL,
    connection_id  BLOB NOT NULL REFERENCES sso_connections (id) ON DELETE CASCADE,
    tenant_id      BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    browser_hash   BLOB NOT NULL,
    nonce          TEXT NOT NULL,
    pkce_verifier  TEXT NOT NULL,
    redirect_to    TEXT NOT NULL,
    link_user      BLOB REFERENCES users (id) ON DELETE CASCADE,
    expires_at     TEXT NOT NULL
);
-- Links a signed-in account asked for (`POST /v1/sso/link`): the hash of the single-use ticket
-- its browser opens to start the login that links it, for two minutes.
CREATE TABLE sso_link_tickets (
    ticket_hash  BLOB PRIMARY KEY NOT NULL,
    user_id      BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tenant_id    BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    expires_at   TEXT NOT NULL
);
-- Single-use codes a callback hands the app (60 s) for POST /v1/auth/sso/exchange: the hash,
-- the account and tenant, the methods of the sign-in and the credentials epoch read then.
CREATE TABLE sso_codes (
    code_hash          BLOB PRIMARY KEY NOT NULL,
    user_id            BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tenant_id          BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    credentials_epoch  INTEGER NOT NULL,
    amr                TEXT NOT NULL,
    expires_at         TEXT NOT NULL
);
ALTER TABLE tenant_auth_policies ADD COLUMN sso_required INTEGER NOT NULL DEFAULT 0;
