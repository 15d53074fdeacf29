-- The W3C traceparent of the request that made the sandbox queue a webhook (a confirm, a capture,
-- a refund), so its delivery continues that trace into the webhook and what follows.
ALTER TABLE sandbox_deliveries ADD COLUMN traceparent TEXT;
