-- wrk script: a stream of unique, always-applicable webhook events. Each request is a 0.01
-- partial refund of one of the captured payments listed in INTENTS (comma-separated), with a
-- fresh event id and refund id, so every request is applied (version +1, a history row, an
-- outbox event). Sent unsigned: the benchmark server runs with allow_unsigned_webhooks. The
-- timestamp is the current time (event times more than 5 minutes ahead are refused; refunds with
-- a refund id are applied whatever their order, so one-second resolution is enough).
local intents = {}
for id in string.gmatch(os.getenv("INTENTS"), "[^,]+") do table.insert(intents, id) end
local counter = 0

function setup(thread)
  thread:set("prefix", string.format("%d-%d", os.time(), math.random(1, 1000000000)))
  thread:set("offset", math.random(0, #intents - 1))
end

function request()
  counter = counter + 1
  local intent = intents[((offset + counter) % #intents) + 1]
  local body = string.format(
    '{"id":"evt-%s-%d","event_type":"charge.refunded","payment_intent_id":"%s","status":"REFUNDED",' ..
    '"timestamp":"%s","data":{"refund_id":"re-%s-%d","amount":0.01}}',
    prefix, counter, intent, os.date("!%Y-%m-%dT%H:%M:%SZ"), prefix, counter)
  return wrk.format("POST", "/api/v1/payments/webhook", {["Content-Type"] = "application/json"}, body)
end
