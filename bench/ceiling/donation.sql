-- pgbench: what the server does for one POST /api/v1/donations with an Idempotency-Key, statement
-- for statement (docs/ARCHITECTURE.md "The path of a donation"): look the key up, open a
-- transaction, take the key's advisory lock, look again, mark a savepoint, insert the donation
-- and its outbox event if the campaign is open (one statement, share-locking the campaign), save
-- the response, commit. Ids are derived from a random number so no extra round trip makes them.
-- Run with -M prepared -D campaign=<uuid> (bench/ceiling.sh).
\set k random(1, 9000000000000000000)
SELECT status_code, body FROM idempotency_keys WHERE scope = 'POST /api/v1/donations' AND key = :k::text;
BEGIN;
SELECT pg_try_advisory_xact_lock(hashtextextended('POST /api/v1/donations' || :k::text, 0));
SELECT status_code, body FROM idempotency_keys WHERE scope = 'POST /api/v1/donations' AND key = :k::text;
SAVEPOINT cfa_work;
WITH open AS (SELECT id FROM campaigns WHERE id = (:campaign)::uuid AND status = 'ACTIVE' AND currency = 'USD' FOR SHARE), donation AS (INSERT INTO donations (id, campaign_id, donor_email, donor_name, amount_minor, currency, status, payment_intent_id, version, metadata, created_at, updated_at) SELECT md5(:k::text || 'd')::uuid, id, 'bench@example.org', NULL, 1234, 'USD', 'PENDING', NULL, 1, '{}', now(), now() FROM open RETURNING id) INSERT INTO outbox (event_id, event_type, aggregate_type, aggregate_id, version, occurred_at, traceparent, payload) SELECT md5(:k::text || 'e')::uuid, 'donation.created', 'donation', md5(:k::text || 'd'), 1, now(), NULL, '{"event_type":"donation.created","amount_minor":1234,"currency":"USD","status":"PENDING"}' FROM donation;
INSERT INTO idempotency_keys (scope, key, fingerprint, status_code, body, created_at) VALUES ('POST /api/v1/donations', :k::text, 'fingerprint', 201, '\x7b7d'::bytea, now());
COMMIT;
