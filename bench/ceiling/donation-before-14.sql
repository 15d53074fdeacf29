-- The statements of one POST /api/v1/donations with an Idempotency-Key before #14 cut them (a
-- campaign read and two inserts where one statement is now), kept for comparisons:
-- SCRIPT=bench/ceiling/donation-before-14.sql bench/ceiling.sh. Look the key up, open a
-- transaction, take the key's advisory lock, look again, read the campaign, insert the donation,
-- its outbox event and the saved response, commit.
\set k random(1, 9000000000000000000)
SELECT status_code, body FROM idempotency_keys WHERE scope = 'POST /api/v1/donations' AND key = :k::text;
BEGIN;
SELECT pg_try_advisory_xact_lock(hashtextextended('POST /api/v1/donations' || :k::text, 0));
SELECT status_code, body FROM idempotency_keys WHERE scope = 'POST /api/v1/donations' AND key = :k::text;
SELECT * FROM campaigns WHERE id = (:campaign)::uuid;
INSERT INTO donations (id, campaign_id, donor_email, donor_name, amount_minor, currency, status, payment_intent_id, version, metadata, created_at, updated_at) VALUES (md5(:k::text || 'd')::uuid, (:campaign)::uuid, 'bench@example.org', NULL, 1234, 'USD', 'PENDING', NULL, 1, '{}', now(), now());
INSERT INTO outbox (event_id, event_type, aggregate_type, aggregate_id, version, occurred_at, traceparent, payload) VALUES (md5(:k::text || 'e')::uuid, 'donation.created', 'donation', md5(:k::text || 'd'), 1, now(), NULL, '{"event_type":"donation.created","amount_minor":1234,"currency":"USD","status":"PENDING"}');
INSERT INTO idempotency_keys (scope, key, fingerprint, status_code, body, created_at) VALUES ('POST /api/v1/donations', :k::text, 'fingerprint', 201, '\x7b7d'::bytea, now());
COMMIT;
