-- The totals read model, maintained from donation events: one row per campaign, the part each
-- donation contributes (so redelivered or stale events change nothing), and the donors counted.
CREATE TABLE campaign_totals (
    campaign_id      TEXT PRIMARY KEY NOT NULL,
    total_minor      INTEGER NOT NULL DEFAULT 0,
    completed_count  INTEGER NOT NULL DEFAULT 0,
    unique_donors    INTEGER NOT NULL DEFAULT 0,
    goal_minor       INTEGER NOT NULL,
    currency         TEXT NOT NULL,
    last_updated     TEXT NOT NULL
);

CREATE TABLE totals_contributions (
    donation_id    TEXT PRIMARY KEY NOT NULL,
    campaign_id    TEXT NOT NULL,
    donor_email    TEXT NOT NULL,
    version        INTEGER NOT NULL,
    counted_minor  INTEGER NOT NULL,
    counted        INTEGER NOT NULL
);
CREATE INDEX totals_contributions_by_campaign ON totals_contributions (campaign_id);

CREATE TABLE totals_donors (
    campaign_id  TEXT NOT NULL,
    donor_email  TEXT NOT NULL,
    donations    INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, donor_email)
);
