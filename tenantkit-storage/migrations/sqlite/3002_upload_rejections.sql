-- tenantkit-storage (SQLite): a rejected upload keeps its row (state 'rejected' and what
-- differed), so completing it again answers upload_mismatch again, not 404. SQLite cannot
-- change a CHECK constraint, so the table is rebuilt (no other table refers to it).

CREATE TABLE storage_uploads_new (
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
    state         TEXT NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'completed', 'rejected')),
    file_id       BLOB UNIQUE,
    rejection     TEXT,
    UNIQUE (tenant_id, id)
);
INSERT INTO storage_uploads_new (id, tenant_id, object_id, project_id, filename, content_type,
    size, sha256, method, created_by, created_at, expires_at, state, file_id)
SELECT id, tenant_id, object_id, project_id, filename, content_type, size, sha256, method,
    created_by, created_at, expires_at, state, file_id FROM storage_uploads;
DROP TABLE storage_uploads;
ALTER TABLE storage_uploads_new RENAME TO storage_uploads;
CREATE INDEX storage_uploads_pending_idx ON storage_uploads (tenant_id, state);
CREATE INDEX storage_uploads_expiry_idx ON storage_uploads (state, expires_at);
