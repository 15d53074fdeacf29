-- Payments, their state history, stored webhook outcomes, refunds, consumer inboxes, and the
-- built-in sandbox provider's own records.

ALTER TABLE donations ADD COLUMN refunded_minor BIGINT NOT NULL DEFAULT 0;

CREATE TABLE payments (
    id                 UUID PRIMARY KEY,
    payment_intent_id  TEXT NOT NULL UNIQUE,
    donation_id        UUID NOT NULL,
    amount_minor       BIGINT NOT NULL CHECK (amount_minor > 0),
    currency           TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('INITIATED', 'AUTHORIZED', 'CAPTURED', 'FAILED', 'REFUNDED')),
    gateway            TEXT NOT NULL,
    client_secret      TEXT NOT NULL,
    version            BIGINT NOT NULL DEFAULT 1,
    refunded_minor     BIGINT NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0 AND refunded_minor <= amount_minor),
    last_event_at      TIMESTAMPTZ,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL
);
CREATE INDEX payments_by_donation ON payments (donation_id);
CREATE INDEX payments_open ON payments (updated_at) WHERE status IN ('INITIATED', 'AUTHORIZED');

CREATE TABLE payment_state_history (
    id            BIGSERIAL PRIMARY KEY,
    payment_id    UUID NOT NULL REFERENCES payments (id),
    from_status   TEXT NOT NULL,
    to_status     TEXT NOT NULL,
    version       BIGINT NOT NULL,
    event_id      TEXT NOT NULL,
    event_at      TIMESTAMPTZ NOT NULL,
    refund_id     TEXT,
    amount_minor  BIGINT,
    recorded_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX payment_state_history_by_payment ON payment_state_history (payment_id, id);

CREATE TABLE webhook_events (
    dedup_key          TEXT PRIMARY KEY,
    payment_intent_id  TEXT,
    event_id           TEXT,
    outcome            TEXT NOT NULL,
    status_code        INTEGER NOT NULL,
    body               BYTEA NOT NULL,
    received_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhook_events_by_received ON webhook_events (received_at DESC);

CREATE TABLE refunds (
    refund_id     TEXT PRIMARY KEY,
    payment_id    UUID NOT NULL REFERENCES payments (id),
    amount_minor  BIGINT NOT NULL CHECK (amount_minor > 0),
    status        TEXT NOT NULL CHECK (status IN ('REQUESTED', 'SUCCEEDED', 'FAILED')),
    requested_at  TIMESTAMPTZ NOT NULL,
    completed_at  TIMESTAMPTZ
);
CREATE INDEX refunds_by_payment ON refunds (payment_id);

CREATE TABLE consumer_inbox (
    consumer      TEXT NOT NULL,
    event_id      UUID NOT NULL,
    processed_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

CREATE TABLE sandbox_intents (
    payment_intent_id  TEXT PRIMARY KEY,
    amount_minor       BIGINT NOT NULL,
    currency           TEXT NOT NULL,
    status             TEXT NOT NULL,
    refunded_minor     BIGINT NOT NULL DEFAULT 0,
    status_at          TIMESTAMPTZ NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL
);

CREATE TABLE sandbox_deliveries (
    id                 BIGSERIAL PRIMARY KEY,
    payment_intent_id  TEXT NOT NULL,
    body               TEXT NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at    TIMESTAMPTZ NOT NULL,
    last_status        INTEGER,
    delivered_at       TIMESTAMPTZ,
    given_up_at        TIMESTAMPTZ
);
CREATE INDEX sandbox_deliveries_due ON sandbox_deliveries (next_attempt_at) WHERE delivered_at IS NULL AND given_up_at IS NULL;
