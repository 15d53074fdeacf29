-- An outbox row whose delivery failed outbox.max_attempts times is set aside (dead_at) so it no
-- longer holds back the events after it; operators see it in the outbox status.
ALTER TABLE outbox ADD COLUMN dead_at TIMESTAMPTZ;
DROP INDEX outbox_pending;
CREATE INDEX outbox_pending ON outbox (id) WHERE sent_at IS NULL AND dead_at IS NULL;
