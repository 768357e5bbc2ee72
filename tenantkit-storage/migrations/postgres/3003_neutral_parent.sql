-- tenantkit-storage (PostgreSQL): files hang off a row of a table the app names (its table and
-- key column are the app's configuration, `FileParent`), so the column holding that row's id
-- is neutral: `project_id` becomes `parent_id`, with its data. Row-level security and grants
-- are on the tables and stay as they are.

ALTER TABLE storage_uploads RENAME COLUMN project_id TO parent_id;
ALTER TABLE storage_files RENAME COLUMN project_id TO parent_id;
ALTER INDEX storage_files_project_idx RENAME TO storage_files_parent_idx;
