-- Single sign-on (feature `sso`; the tables exist either way, so enabling it later needs no
-- migration).
--
-- sso_connections: a tenant's OpenID Connect providers. The client secret is sealed with the
-- server's secret key (bound to the connection id). One connection per issuer and tenant.
-- Tenant rows behind row-level security; a login reads them in system transactions.
CREATE TABLE sso_connections (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    issuer         text NOT NULL,
    client_id      text NOT NULL,
    client_secret  text NOT NULL,
    default_role   text NOT NULL,
    created_at     timestamptz NOT NULL,
    UNIQUE (tenant_id, issuer)
);
CREATE INDEX sso_connections_tenant_idx ON sso_connections (tenant_id);
-- The email domains a tenant claims for just-in-time membership, with the token of the DNS
-- record that proves one; `verified_at` once proven. A domain is verified for one tenant only,
-- and its addresses join through the connection that claimed it only (another connection an
-- admin adds later does not inherit it).
CREATE TABLE sso_domains (
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    domain        text NOT NULL,
    connection_id uuid REFERENCES sso_connections (id) ON DELETE SET NULL,
    dns_token     text NOT NULL,
    created_at    timestamptz NOT NULL,
    verified_at   timestamptz,
    PRIMARY KEY (tenant_id, domain)
);
CREATE UNIQUE INDEX sso_domains_verified_idx ON sso_domains (domain) WHERE verified_at IS NOT NULL;
-- Accounts linked to a provider's subject: (issuer, subject) names one account, never an
-- email address. Accounts are not tenant rows: read in system transactions.
CREATE TABLE sso_identities (
    issuer      text NOT NULL,
    subject     text NOT NULL,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX sso_identities_user_idx ON sso_identities (user_id);
-- Logins sent to a provider and not back yet: the hash of `state`, the hash of the browser
-- cookie it is bound to, the nonce, the PKCE verifier (sealed), where to go after, the account
-- a link was asked for by, expiry.
CREATE TABLE sso_logins (
    state_hash     bytea PRIMARY KEY,
    connection_id  uuid NOT NULL REFERENCES sso_connections (id) ON DELETE CASCADE,
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    browser_hash   bytea NOT NULL,
    nonce          text NOT NULL,
    pkce_verifier  text NOT NULL,
    redirect_to    text NOT NULL,
    link_user      uuid REFERENCES users (id) ON DELETE CASCADE,
    expires_at     timestamptz NOT NULL
);
-- Links a signed-in account asked for (`POST /v1/sso/link`): the hash of the single-use ticket
-- its browser opens to start the login that links it, for two minutes.
CREATE TABLE sso_link_tickets (
    ticket_hash  bytea PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    expires_at   timestamptz NOT NULL
);
-- Single-use codes a callback hands the app (60 s) for POST /v1/auth/sso/exchange: the hash,
-- the account and tenant, the methods of the sign-in and the credentials epoch read then.
CREATE TABLE sso_codes (
    code_hash          bytea PRIMARY KEY,
    user_id            uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tenant_id          uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    credentials_epoch  bigint NOT NULL,
    amr                text NOT NULL,
    expires_at         timestamptz NOT NULL
);
GRANT SELECT, INSERT, UPDATE, DELETE
    ON sso_connections, sso_domains, sso_identities, sso_logins, sso_codes, sso_link_tickets
    TO tenantkit_app;
SELECT tenantkit_enable_tenant_rls('sso_connections');
SELECT tenantkit_allow_system_access('sso_connections');
SELECT tenantkit_enable_tenant_rls('sso_domains');
SELECT tenantkit_allow_system_access('sso_domains');
ALTER TABLE tenant_auth_policies ADD COLUMN sso_required boolean NOT NULL DEFAULT false;
