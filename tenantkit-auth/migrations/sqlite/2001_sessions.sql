-- Login sessions (refresh-token families) and their refresh tokens, stored only as SHA-256
-- hashes. Global tables: a refresh token is looked up before its tenant is known.

CREATE TABLE sessions (
    id            BLOB PRIMARY KEY NOT NULL,
    user_id       BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tenant_id     BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_at    TEXT NOT NULL,
    last_used_at  TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    revoked_at    TEXT,
    revoked_reason TEXT
);
CREATE INDEX sessions_user_idx ON sessions (user_id);

CREATE TABLE refresh_tokens (
    token_hash  BLOB PRIMARY KEY NOT NULL,
    session_id  BLOB NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    generation  INTEGER NOT NULL CHECK (generation >= 1),
    created_at  TEXT NOT NULL,
    rotated_at  TEXT
);
CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id);
