-- tenantkit-storage (PostgreSQL): a rejected upload keeps its row (state 'rejected' and what
-- differed), so completing it again answers upload_mismatch again, not 404. Rejected uploads
-- count against no quota and are swept like expired pending ones.

ALTER TABLE storage_uploads DROP CONSTRAINT storage_uploads_state_check;
ALTER TABLE storage_uploads ADD CONSTRAINT storage_uploads_state_check
    CHECK (state IN ('pending', 'completed', 'rejected'));
ALTER TABLE storage_uploads ADD COLUMN rejection text;
