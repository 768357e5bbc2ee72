-- tenantkit-storage (SQLite): pending uploads, files, and a per-tenant row quota checks write.

CREATE TABLE storage_uploads (
    id            BLOB PRIMARY KEY NOT NULL,
    tenant_id     BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    object_id     BLOB NOT NULL UNIQUE,
    project_id    BLOB,
    filename      TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size          INTEGER NOT NULL CHECK (size >= 0),
    sha256        BLOB NOT NULL CHECK (length(sha256) = 32),
    method        TEXT NOT NULL CHECK (method IN ('PUT', 'POST')),
    created_by    BLOB REFERENCES users (id) ON DELETE SET NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    state         TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'completed')),
    file_id       BLOB UNIQUE,
    UNIQUE (tenant_id, id)
);
CREATE INDEX storage_uploads_pending_idx ON storage_uploads (tenant_id, state);
CREATE INDEX storage_uploads_expiry_idx ON storage_uploads (state, expires_at);

CREATE TABLE storage_files (
    id            BLOB PRIMARY KEY NOT NULL,
    tenant_id     BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    upload_id     BLOB NOT NULL UNIQUE,
    object_id     BLOB NOT NULL UNIQUE,
    project_id    BLOB,
    filename      TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size          INTEGER NOT NULL CHECK (size >= 0),
    sha256        BLOB NOT NULL CHECK (length(sha256) = 32),
    created_by    BLOB REFERENCES users (id) ON DELETE SET NULL,
    created_at    TEXT NOT NULL,
    UNIQUE (tenant_id, id)
);
CREATE INDEX storage_files_project_idx ON storage_files (tenant_id, project_id, id);

CREATE TABLE storage_usage (
    tenant_id     BLOB PRIMARY KEY NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    intents       INTEGER NOT NULL DEFAULT 0
);
