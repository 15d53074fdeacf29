-- Like post_donation.lua, but each connection waits DELAY_MS (default 8) between requests, so
-- `wrk -c4` offers at most about 500 donations/s.
local campaign = os.getenv("CAMPAIGN")
local pause = tonumber(os.getenv("DELAY_MS") or "8")
local body = '{"campaign_id":"' .. campaign .. '","donor_email":"bench@example.org","amount":12.34}'
local counter = 0

function setup(thread)
  thread:set("prefix", string.format("%d-%d", os.time(), math.random(1, 1000000000)))
end

function delay()
  return pause
end

function request()
  counter = counter + 1
  return wrk.format("POST", "/api/v1/donations", {
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = prefix .. "-" .. counter,
  }, body)
end
