#!/usr/bin/env bash
# Complete donor journeys (issue #14, point 2) against a fresh all-in-one server: first
# `bench/journeys.py steady` (RATE journeys/s, default 500, for STEADY_SECONDS s, default 60, over
# CAMPAIGNS campaigns, default 20; target: capture → totals p99 < 1 s), then `bench/journeys.py
# burst` (JOURNEYS journeys, default 2000, to one campaign; target: totals exact within 2 s of the
# last webhook). Webhooks are signed (payments.webhook_secret), operator endpoints need a key.
# Usage: bench/journeys.sh sqlite | bench/journeys.sh postgres [ADMIN_URL]
# Build first: cargo build --release -p cfa-server (PROFILE=debug uses a debug build; BIN=path
# any binary). Exit status 1 if either run saw a 5xx, a request without answer, or totals that
# never became exact; missed performance targets are printed, not failed. WORKERS sets the
# number of load processes of the steady run (default: bench/journeys.py's choice).
set -euo pipefail
seconds=${STEADY_SECONDS:-60}
cd "$(dirname "$0")/.."
backend=${1:-sqlite}
rate=${RATE:-500}
journeys=${JOURNEYS:-2000}
campaigns=${CAMPAIGNS:-20}
port=${PORT:-8109}
secret=whsec_bench
key=bench-key
bin=${BIN:-"${CARGO_TARGET_DIR:-$HOME/.cache/cfa-target}/${PROFILE:-release}/cfa-server"}
[ -x "$bin" ] || { echo "build first: cargo build --release -p cfa-server (or set PROFILE=debug or BIN=)" >&2; exit 2; }
ulimit -n 65536 2>/dev/null || ulimit -n 4096 2>/dev/null || true
export CFA_LOG__LEVEL=warn CFA_GATEWAY__RATE_LIMIT__ENABLED=false \
  CFA_PAYMENTS__WEBHOOK_SECRET=$secret CFA_AUTH__API_KEYS=$key
. bench/server.sh
start_server "$bin" "$backend" "${2:-}"
echo "== $backend, $(curl -s "$base/version"), $bin"
status=0
python3 bench/journeys.py steady "$base" --rate "$rate" --seconds "$seconds" --campaigns "$campaigns" \
  ${WORKERS:+--workers "$WORKERS"} --webhook-secret "$secret" --api-key "$key" || status=1
echo
python3 bench/journeys.py burst "$base" --journeys "$journeys" --webhook-secret "$secret" --api-key "$key" || status=1
echo
echo "server RSS: $(awk '/VmRSS/ {print $2 " kB"}' "/proc/$pid/status"), CPU $(awk '{printf "%.1f s", ($14 + $15) / '"$(getconf CLK_TCK)"'}' "/proc/$pid/stat")"
errors=$(grep -c '"level":"ERROR"' "$work/server.log" || true)
warnings=$(grep -c '"level":"WARN"' "$work/server.log" || true)
echo "server log: $errors error and $warnings warning lines"
if [ "$errors$warnings" != 00 ]; then grep -E '"level":"(ERROR|WARN)"' "$work/server.log" | cut -c1-400 | sort | uniq -c | sort -rn | head -n 5; fi
exit $status
