-- The transactional outbox: messages written in the same transaction as the change they
-- announce, relayed after the commit, at least once (see tenantkit_core::outbox). A message
-- of a tenant carries its tenant_id; a system message has none.
CREATE TABLE outbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     uuid REFERENCES tenants (id) ON DELETE CASCADE,
    topic         text NOT NULL CHECK (length(topic) BETWEEN 1 AND 200),
    payload       jsonb NOT NULL,
    created_at    timestamptz NOT NULL,
    -- When the message may be claimed: its creation, then the end of each claim's lease.
    available_at  timestamptz NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    delivered_at  timestamptz
);
-- The claim: undelivered messages of one topic, oldest id first.
CREATE INDEX outbox_pending_idx ON outbox (topic, id) WHERE delivered_at IS NULL;
-- The prune: delivered messages by age.
CREATE INDEX outbox_delivered_idx ON outbox (delivered_at) WHERE delivered_at IS NOT NULL;

-- A tenant transaction may read its own tenant's messages and append new ones for its own
-- tenant, never change, delete or forge another's (no UPDATE or DELETE policy applies to
-- it). The relay works in system transactions, which reach every message.
ALTER TABLE outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON outbox FOR SELECT
    USING (tenant_id = tenantkit_current_tenant());
CREATE POLICY tenant_append ON outbox FOR INSERT
    WITH CHECK (tenant_id = tenantkit_current_tenant());
SELECT tenantkit_allow_system_access('outbox');

GRANT SELECT, INSERT, UPDATE, DELETE ON outbox TO tenantkit_app;

-- Wakes listeners (LISTEN tenantkit_outbox) when a transaction that wrote messages commits,
-- with the topic as payload: NOTIFY is delivered at commit, never for a rolled-back
-- transaction, and folds identical notifications of one transaction into one.
CREATE FUNCTION tenantkit_outbox_notify() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM pg_notify('tenantkit_outbox', NEW.topic);
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH ROW EXECUTE FUNCTION tenantkit_outbox_notify();
