-- The request body of each webhook delivery, so an operator can list and replay it.
ALTER TABLE webhook_events ADD COLUMN request BLOB;
ALTER TABLE webhook_events ADD COLUMN replay_of TEXT;
