-- Single-use tokens sent by email (password reset, email verification), stored as SHA-256.
CREATE TABLE user_tokens (
    token_hash  BLOB PRIMARY KEY NOT NULL,
    user_id     BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose     TEXT NOT NULL CHECK (purpose IN ('password_reset', 'email_verification')),
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    used_at     TEXT
);
CREATE INDEX user_tokens_user_idx ON user_tokens (user_id, purpose);
