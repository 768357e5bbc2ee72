-- tenantkit-storage (SQLite): files hang off a row of a table the app names (its table and key
-- column are the app's configuration, `FileParent`), so the column holding that row's id is
-- neutral: `project_id` becomes `parent_id`, with its data. SQLite renames a column in place
-- (indexes follow it); an index cannot be renamed, so it is made again under its new name.

ALTER TABLE storage_uploads RENAME COLUMN project_id TO parent_id;
ALTER TABLE storage_files RENAME COLUMN project_id TO parent_id;
DROP INDEX storage_files_project_idx;
CREATE INDEX storage_files_parent_idx ON storage_files (tenant_id, parent_id, id);
