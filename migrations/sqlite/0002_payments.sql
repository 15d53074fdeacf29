-- Payments, their state history, stored webhook outcomes, refunds, consumer inboxes, and the
-- built-in sandbox provider's own records.

ALTER TABLE donations ADD COLUMN refunded_minor INTEGER NOT NULL DEFAULT 0;

CREATE TABLE payments (
    id                 TEXT PRIMARY KEY NOT NULL,
    payment_intent_id  TEXT NOT NULL UNIQUE,
    donation_id        TEXT NOT NULL,
    amount_minor       INTEGER NOT NULL CHECK (amount_minor > 0),
    currency           TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('INITIATED', 'AUTHORIZED', 'CAPTURED', 'FAILED', 'REFUNDED')),
    gateway            TEXT NOT NULL,
    client_secret      TEXT NOT NULL,
    version            INTEGER NOT NULL DEFAULT 1,
    refunded_minor     INTEGER NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0 AND refunded_minor <= amount_minor),
    last_event_at      TEXT,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL
);
CREATE INDEX payments_by_donation ON payments (donation_id);
CREATE INDEX payments_open ON payments (updated_at) WHERE status IN ('INITIATED', 'AUTHORIZED');

CREATE TABLE payment_state_history (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    payment_id    TEXT NOT NULL REFERENCES payments (id),
    from_status   TEXT NOT NULL,
    to_status     TEXT NOT NULL,
    version       INTEGER NOT NULL,
    event_id      TEXT NOT NULL,
    event_at      TEXT NOT NULL,
    refund_id     TEXT,
    amount_minor  INTEGER,
    recorded_at   TEXT NOT NULL
);
CREATE INDEX payment_state_history_by_payment ON payment_state_history (payment_id, id);

CREATE TABLE webhook_events (
    dedup_key          TEXT PRIMARY KEY NOT NULL,
    payment_intent_id  TEXT,
    event_id           TEXT,
    outcome            TEXT NOT NULL,
    status_code        INTEGER NOT NULL,
    body               BLOB NOT NULL,
    received_at        TEXT NOT NULL
);
CREATE INDEX webhook_events_by_received ON webhook_events (received_at DESC);

CREATE TABLE refunds (
    refund_id     TEXT PRIMARY KEY NOT NULL,
    payment_id    TEXT NOT NULL REFERENCES payments (id),
    amount_minor  INTEGER NOT NULL CHECK (amount_minor > 0),
    status        TEXT NOT NULL CHECK (status IN ('REQUESTED', 'SUCCEEDED', 'FAILED')),
    requested_at  TEXT NOT NULL,
    completed_at  TEXT
);
CREATE INDEX refunds_by_payment ON refunds (payment_id);

CREATE TABLE consumer_inbox (
    consumer      TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    processed_at  TEXT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

CREATE TABLE sandbox_intents (
    payment_intent_id  TEXT PRIMARY KEY NOT NULL,
    amount_minor       INTEGER NOT NULL,
    currency           TEXT NOT NULL,
    status             TEXT NOT NULL,
    refunded_minor     INTEGER NOT NULL DEFAULT 0,
    status_at          TEXT NOT NULL,
    created_at         TEXT NOT NULL
);

CREATE TABLE sandbox_deliveries (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    payment_intent_id  TEXT NOT NULL,
    body               TEXT NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at    TEXT NOT NULL,
    last_status        INTEGER,
    delivered_at       TEXT,
    given_up_at        TEXT
);
CREATE INDEX sandbox_deliveries_due ON sandbox_deliveries (next_attempt_at) WHERE delivered_at IS NULL AND given_up_at IS NULL;
