-- A refresh rotation in one statement on SQLite, which has no data-modifying CTEs (PostgreSQL
-- does it with one: see the store). Marking a token rotated with its successor's hash inserts
-- the successor and touches the session in the same statement, through this trigger. One
-- statement needs no BEGIN and COMMIT: the rotation holds the single writer connection for one
-- round trip instead of five. A rotation without a successor hash (an older code path) fires
-- nothing.
ALTER TABLE refresh_tokens ADD COLUMN successor_hash BLOB;

CREATE TRIGGER refresh_tokens_rotation
AFTER UPDATE OF rotated_at ON refresh_tokens
FOR EACH ROW
WHEN OLD.rotated_at IS NULL AND NEW.rotated_at IS NOT NULL AND NEW.successor_hash IS NOT NULL
BEGIN
    INSERT INTO refresh_tokens (token_hash, session_id, generation, created_at)
    VALUES (NEW.successor_hash, NEW.session_id, NEW.generation + 1, NEW.rotated_at);
    UPDATE sessions SET last_used_at = NEW.rotated_at WHERE id = NEW.session_id;
END;
