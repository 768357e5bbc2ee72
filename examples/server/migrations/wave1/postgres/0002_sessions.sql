-- Login sessions (refresh-token families) and their refresh tokens, stored only as SHA-256
-- hashes. Global tables: a refresh token is looked up before its tenant is known, so they
-- carry no tenant policy; only the application role's grants protect them.

CREATE TABLE sessions (
    id             uuid PRIMARY KEY,
    user_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_at     timestamptz NOT NULL,
    last_used_at   timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    revoked_reason text
);
CREATE INDEX sessions_user_idx ON sessions (user_id);

CREATE TABLE refresh_tokens (
    token_hash  bytea PRIMARY KEY,
    session_id  uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    generation  bigint NOT NULL CHECK (generation >= 1),
    created_at  timestamptz NOT NULL,
    rotated_at  timestamptz
);
CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id);

GRANT SELECT, INSERT, UPDATE, DELETE ON sessions, refresh_tokens TO tenantkit_app;
