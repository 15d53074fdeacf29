-- The W3C traceparent of the consumer span that queued an e-mail, so the span that sends it
-- (possibly much later, after retries) continues the trace of the donation or payment.
ALTER TABLE notifications ADD COLUMN traceparent TEXT;
