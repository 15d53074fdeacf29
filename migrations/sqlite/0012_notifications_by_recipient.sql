-- Notices per recipient are limited (notifications.max_per_recipient_per_hour): counting a
-- recipient's recent notices must not scan the table.
CREATE INDEX notifications_by_recipient ON notifications (recipient, created_at);
