-- The totals read model, maintained from donation events: one row per campaign, the part each
-- donation contributes (so redelivered or stale events change nothing), and the donors counted.
CREATE TABLE campaign_totals (
    campaign_id      UUID PRIMARY KEY,
    total_minor      BIGINT NOT NULL DEFAULT 0,
    completed_count  BIGINT NOT NULL DEFAULT 0,
    unique_donors    BIGINT NOT NULL DEFAULT 0,
    goal_minor       BIGINT NOT NULL,
    currency         TEXT NOT NULL,
    last_updated     TIMESTAMPTZ NOT NULL
);

CREATE TABLE totals_contributions (
    donation_id    UUID PRIMARY KEY,
    campaign_id    UUID NOT NULL,
    donor_email    TEXT NOT NULL,
    version        BIGINT NOT NULL,
    counted_minor  BIGINT NOT NULL,
    counted        BIGINT NOT NULL
);
CREATE INDEX totals_contributions_by_campaign ON totals_contributions (campaign_id);

CREATE TABLE totals_donors (
    campaign_id  UUID NOT NULL,
    donor_email  TEXT NOT NULL,
    donations    BIGINT NOT NULL,
    PRIMARY KEY (campaign_id, donor_email)
);
