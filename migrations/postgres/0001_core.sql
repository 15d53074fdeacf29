-- The donation core: campaigns, donations, their audit trail, idempotency keys and the outbox.
-- Money is BIGINT minor units; every timestamp is TIMESTAMPTZ.

CREATE TABLE campaigns (
    id           UUID PRIMARY KEY,
    title        TEXT NOT NULL,
    goal_minor   BIGINT NOT NULL CHECK (goal_minor > 0),
    currency     TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('ACTIVE', 'CLOSED')),
    version      BIGINT NOT NULL DEFAULT 1,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE donations (
    id                 UUID PRIMARY KEY,
    campaign_id        UUID NOT NULL REFERENCES campaigns (id),
    donor_email        TEXT NOT NULL,
    donor_name         TEXT,
    amount_minor       BIGINT NOT NULL CHECK (amount_minor > 0),
    currency           TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('PENDING', 'COMPLETED', 'FAILED', 'REFUNDED')),
    payment_intent_id  TEXT,
    version            BIGINT NOT NULL DEFAULT 1,
    metadata           JSONB NOT NULL DEFAULT '{}',
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL
);
CREATE INDEX donations_by_donor ON donations (donor_email, created_at DESC);
CREATE INDEX donations_by_campaign ON donations (campaign_id, status);
CREATE INDEX donations_by_created ON donations (created_at DESC);

CREATE TABLE donation_status_audit (
    id           BIGSERIAL PRIMARY KEY,
    donation_id  UUID NOT NULL REFERENCES donations (id),
    from_status  TEXT NOT NULL,
    to_status    TEXT NOT NULL,
    reason       TEXT NOT NULL,
    actor        TEXT NOT NULL,
    at           TIMESTAMPTZ NOT NULL
);
CREATE INDEX donation_status_audit_by_donation ON donation_status_audit (donation_id);

CREATE TABLE idempotency_keys (
    scope         TEXT NOT NULL,
    key           TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    status_code   INTEGER NOT NULL,
    body          BYTEA NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_by_created ON idempotency_keys (created_at);

CREATE TABLE outbox (
    id              BIGSERIAL PRIMARY KEY,
    event_id        UUID NOT NULL UNIQUE,
    event_type      TEXT NOT NULL,
    aggregate_type  TEXT NOT NULL,
    aggregate_id    TEXT NOT NULL,
    version         BIGINT NOT NULL,
    occurred_at     TIMESTAMPTZ NOT NULL,
    traceparent     TEXT,
    payload         JSONB NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    claimed_by      TEXT,
    claimed_until   TIMESTAMPTZ,
    sent_at         TIMESTAMPTZ
);
CREATE INDEX outbox_pending ON outbox (id) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
