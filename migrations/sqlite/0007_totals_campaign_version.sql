-- The campaign version the totals row's goal and currency come from, so an older campaign event
-- redelivered late cannot bring back an old goal.
ALTER TABLE campaign_totals ADD COLUMN campaign_version INTEGER NOT NULL DEFAULT 0;
