-- When reconciliation last looked at a payment, so a pass moves on to others instead of
-- re-checking the same oldest ones forever.
ALTER TABLE payments ADD COLUMN reconciled_at TIMESTAMPTZ;
