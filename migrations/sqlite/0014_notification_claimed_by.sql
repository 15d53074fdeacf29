-- Which sender holds a notification's claim: the sender renews its short lease (claimed_until)
-- while a slow send is in flight, and renews only the claims that are still its own.
ALTER TABLE notifications ADD COLUMN claimed_by TEXT;
