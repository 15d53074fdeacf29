#!/usr/bin/env bash
# Benchmarks the donation API of a release build with wrk (32 connections):
#   POST /api/v1/donations (unique Idempotency-Key per request) and GET /api/v1/donations/{id},
# then prints the server's resident memory. Usage:
#   bench/run.sh sqlite              # embedded SQLite in a temporary directory
#   bench/run.sh postgres [ADMIN_URL] # a fresh database on that server (default local postgres)
# Needs wrk (Debian: apt-get install wrk). Run `cargo build --release -p cfa-server` first, or
# set BIN to another build of cfa-server (to compare two builds in one sitting).
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-sqlite}
duration=${DURATION:-20s}
connections=${CONNECTIONS:-32}
port=${PORT:-8100}
target=${CARGO_TARGET_DIR:-$HOME/.cache/cfa-target}
bin=${BIN:-$target/release/cfa-server}
[ -x "$bin" ] || { echo "build first: cargo build --release -p cfa-server" >&2; exit 2; }
command -v wrk >/dev/null || { echo "install wrk first (apt-get install wrk)" >&2; exit 2; }

work=$(mktemp -d)
export CFA_LISTEN=127.0.0.1:$port CFA_DATA_DIR=$work CFA_LOG__LEVEL=warn CFA_GATEWAY__RATE_LIMIT__ENABLED=false
case $backend in
  sqlite) ;;
  postgres)
    admin=${2:-postgres://postgres@127.0.0.1:5432/postgres}
    db=cfa_bench_$$
    psql "$admin" -qc "CREATE DATABASE $db" >/dev/null
    export CFA_DATABASE_URL=${admin%/*}/$db
    ;;
  *) echo "backend: sqlite or postgres" >&2; exit 2 ;;
esac

"$bin" run >"$work/server.log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ "$backend" = postgres ]; then psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null; fi
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break; sleep 0.1; done

base=http://127.0.0.1:$port
campaign=$(curl -sf -XPOST "$base/api/v1/campaigns" -H 'content-type: application/json' \
  -d '{"title":"bench","goal_amount":1000000}' | python3 -c 'import sys,json;print(json.load(sys.stdin)["id"])')
donation=$(curl -sf -XPOST "$base/api/v1/donations" -H 'content-type: application/json' \
  -d "{\"campaign_id\":\"$campaign\",\"donor_email\":\"b@example.org\",\"amount\":1}" \
  | python3 -c 'import sys,json;print(json.load(sys.stdin)["id"])')

echo "== $backend: POST /api/v1/donations, $connections connections, $duration"
CAMPAIGN=$campaign wrk -t2 -c"$connections" -d"$duration" --latency -s bench/post_donation.lua "$base"
echo "== $backend: GET /api/v1/donations/{id}, $connections connections, $duration"
wrk -t2 -c"$connections" -d"$duration" --latency "$base/api/v1/donations/$donation"
echo "== $backend: server RSS after the run"
grep -E 'VmRSS|VmHWM' "/proc/$pid/status"
