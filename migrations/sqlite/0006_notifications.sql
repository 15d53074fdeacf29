-- Donor notifications: exactly one per (event, kind), sent by a worker that retries with
-- back-off and keeps the ones it gave up on (DEAD).
CREATE TABLE notifications (
    id               TEXT PRIMARY KEY NOT NULL,
    event_id         TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('receipt', 'failure', 'refund')),
    donation_id      TEXT NOT NULL,
    recipient        TEXT NOT NULL,
    subject          TEXT NOT NULL,
    body_text        TEXT NOT NULL,
    body_html        TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('PENDING', 'SENT', 'DEAD')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    next_attempt_at  TEXT NOT NULL,
    claimed_until    TEXT,
    created_at       TEXT NOT NULL,
    sent_at          TEXT,
    UNIQUE (event_id, kind)
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE status = 'PENDING';
CREATE INDEX notifications_by_donation ON notifications (donation_id, created_at);
