-- Single-use tokens sent by email (password reset, email verification), stored as SHA-256.
CREATE TABLE user_tokens (
    token_hash  bytea PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose     text NOT NULL CHECK (purpose IN ('password_reset', 'email_verification')),
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX user_tokens_user_idx ON user_tokens (user_id, purpose);

GRANT SELECT, INSERT, UPDATE, DELETE ON user_tokens TO tenantkit_app;
