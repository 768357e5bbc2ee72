-- How a session's sign-in authenticated: its RFC 8176 `amr` values ("pwd", "otp", "mfa", or an
-- identity provider's), space-separated, empty when unknown. Set when the session starts and
-- never changed: every access token of the session, including those issued after a refresh
-- rotation (which keeps the session row), carries them; a tenant switch copies them to the new
-- session. Sessions from before this migration have none. The table's row-level security
-- (migration 2003) and grants (2001) cover the new column.
ALTER TABLE sessions ADD COLUMN amr text NOT NULL DEFAULT '';
