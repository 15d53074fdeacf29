-- The request body of each webhook delivery, so an operator can list and replay it.
ALTER TABLE webhook_events ADD COLUMN request BYTEA;
ALTER TABLE webhook_events ADD COLUMN replay_of TEXT;
