#!/usr/bin/env bash
# Benchmarks the webhook endpoint of a release build with wrk (32 connections):
#   1. unique events that are all applied (0.01 partial refunds spread over 64 captured payments),
#   2. the replay path (one event delivered again and again).
# Usage: bench/webhooks.sh sqlite | bench/webhooks.sh postgres [ADMIN_URL]
# The server runs with payments.allow_unsigned_webhooks = true because wrk cannot sign; HMAC
# verification costs microseconds next to the transaction.
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-sqlite}
duration=${DURATION:-15s}
connections=${CONNECTIONS:-32}
port=${PORT:-8101}
target=${CARGO_TARGET_DIR:-$HOME/.cache/cfa-target}
bin=${BIN:-"$target/release/cfa-server"}
[ -x "$bin" ] || { echo "build first: cargo build --release -p cfa-server" >&2; exit 2; }
export CFA_LOG__LEVEL=warn CFA_GATEWAY__RATE_LIMIT__ENABLED=false CFA_PAYMENTS__ALLOW_UNSIGNED_WEBHOOKS=true
. bench/server.sh
start_server "$bin" "$backend" "${2:-}"
intents=$(python3 - "$base" <<'PY'
import json, sys, urllib.request
from datetime import datetime, timezone
base = sys.argv[1]
def post(path, body):
    req = urllib.request.Request(base + path, json.dumps(body).encode(), {"content-type": "application/json"})
    return json.load(urllib.request.urlopen(req))
campaign = post("/api/v1/campaigns", {"title": "bench", "goal_amount": 1000000000})["id"]
ids = []
for i in range(64):
    d = post("/api/v1/donations", {"campaign_id": campaign, "donor_email": f"b{i}@example.org", "amount": 1000000})
    pi = post("/api/v1/payments/intent", {"donation_id": d["id"], "amount": 1000000})["payment_intent_id"]
    for n, status in enumerate(["AUTHORIZED", "CAPTURED"]):
        post("/api/v1/payments/webhook", {"id": f"setup-{pi}-{n}", "payment_intent_id": pi, "status": status, "timestamp": datetime.now(timezone.utc).isoformat()})
    ids.append(pi)
print(",".join(ids))
PY
)
echo "== $backend: unique webhook events (each applied), $connections connections, $duration"
INTENTS=$intents wrk -t2 -c"$connections" -d"$duration" --latency -s bench/refund_webhook.lua "$base"
first=${intents%%,*}
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)  # event times more than 5 minutes ahead are refused
replay_body="{\"id\":\"replayed-event\",\"payment_intent_id\":\"$first\",\"status\":\"REFUNDED\",\"timestamp\":\"$now\",\"data\":{\"refund_id\":\"re-replayed\",\"amount\":0.01}}"
cat > "$work/replay.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$replay_body'
LUA
curl -s -XPOST "$base/api/v1/payments/webhook" -H 'content-type: application/json' -d "$replay_body"; echo
echo "== $backend: replays of one stored outcome, $connections connections, $duration"
wrk -t2 -c"$connections" -d"$duration" --latency -s "$work/replay.lua" "$base/api/v1/payments/webhook"
echo "== $backend: check"
curl -s "$base/api/v1/payments/$first" ; echo
grep -E 'VmRSS' "/proc/$pid/status"
