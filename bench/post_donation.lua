-- wrk script: POST /api/v1/donations with a unique Idempotency-Key per request.
-- The campaign id comes from the CAMPAIGN environment variable.
local campaign = os.getenv("CAMPAIGN")
local body = '{"campaign_id":"' .. campaign .. '","donor_email":"bench@example.org","amount":12.34}'
local counter = 0

function setup(thread)
  thread:set("prefix", string.format("%d-%d", os.time(), math.random(1, 1000000000)))
end

function request()
  counter = counter + 1
  return wrk.format("POST", "/api/v1/donations", {
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = prefix .. "-" .. counter,
  }, body)
end
