-- The outcome a donor confirmed a sandbox intent with, and when: a retried confirmation with the
-- same outcome (after a lost 202) gets the same answer instead of a 409, another outcome is
-- refused with the one already given. NULL for intents confirmed before this column existed.
ALTER TABLE sandbox_intents ADD COLUMN confirmed_outcome TEXT;
ALTER TABLE sandbox_intents ADD COLUMN confirmed_at TEXT;
