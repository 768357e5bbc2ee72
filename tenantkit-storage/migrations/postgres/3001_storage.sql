-- tenantkit-storage (PostgreSQL): pending uploads, files, and a per-tenant row that quota
-- checks lock, all tenant-owned behind row-level security. The sweeper works across tenants
-- in system transactions.

CREATE TABLE storage_uploads (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    object_id     uuid NOT NULL UNIQUE,
    project_id    uuid,
    filename      text NOT NULL,
    content_type  text NOT NULL,
    size          bigint NOT NULL CHECK (size >= 0),
    sha256        bytea NOT NULL CHECK (length(sha256) = 32),
    method        text NOT NULL CHECK (method IN ('PUT', 'POST')),
    created_by    uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    state         text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'completed')),
    file_id       uuid UNIQUE,
    UNIQUE (tenant_id, id)
);
CREATE INDEX storage_uploads_pending_idx ON storage_uploads (tenant_id, state);
CREATE INDEX storage_uploads_expiry_idx ON storage_uploads (state, expires_at);

CREATE TABLE storage_files (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    upload_id     uuid NOT NULL UNIQUE,
    object_id     uuid NOT NULL UNIQUE,
    project_id    uuid,
    filename      text NOT NULL,
    content_type  text NOT NULL,
    size          bigint NOT NULL CHECK (size >= 0),
    sha256        bytea NOT NULL CHECK (length(sha256) = 32),
    created_by    uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL,
    UNIQUE (tenant_id, id)
);
CREATE INDEX storage_files_project_idx ON storage_files (tenant_id, project_id, id);

CREATE TABLE storage_usage (
    tenant_id     uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    intents       bigint NOT NULL DEFAULT 0
);

SELECT tenantkit_enable_tenant_rls('storage_uploads');
SELECT tenantkit_allow_system_access('storage_uploads');
SELECT tenantkit_enable_tenant_rls('storage_files');
SELECT tenantkit_allow_system_access('storage_files');
SELECT tenantkit_enable_tenant_rls('storage_usage');

GRANT SELECT, INSERT, UPDATE, DELETE ON storage_uploads, storage_files, storage_usage TO tenantkit_app;
