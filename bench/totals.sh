#!/usr/bin/env bash
# Benchmarks totals reads (64 connections) next to a trivial axum handler in the same run, then
# measures the time from a CAPTURED webhook to the change in the campaign's totals over N
# donations. Usage: bench/totals.sh sqlite | bench/totals.sh postgres [ADMIN_URL]
# Build first: cargo build --release -p cfa-server --bins --examples
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-sqlite}
duration=${DURATION:-15s}
donations=${DONATIONS:-1000}
port=${PORT:-8102}
target=${CARGO_TARGET_DIR:-$HOME/.cache/cfa-target}
bin=${BIN:-"$target/release/cfa-server"}
trivial="$target/release/examples/trivial_http"
[ -x "$bin" ] && [ -x "$trivial" ] || { echo "build first: cargo build --release -p cfa-server --bins --examples" >&2; exit 2; }
work=$(mktemp -d)
export CFA_LISTEN=127.0.0.1:$port CFA_DATA_DIR=$work CFA_LOG__LEVEL=warn CFA_GATEWAY__RATE_LIMIT__ENABLED=false CFA_PAYMENTS__ALLOW_UNSIGNED_WEBHOOKS=true
case $backend in
  sqlite) ;;
  postgres)
    admin=${2:-postgres://postgres@127.0.0.1:5432/postgres}
    db=cfa_bench_$$
    psql "$admin" -qc "CREATE DATABASE $db" >/dev/null
    export CFA_DATABASE_URL=${admin%/*}/$db ;;
  *) echo "backend: sqlite or postgres" >&2; exit 2 ;;
esac
"$bin" run >"$work/server.log" 2>&1 &
pid=$!
"$trivial" 127.0.0.1:8199 &
tpid=$!
cleanup() {
  kill "$pid" "$tpid" 2>/dev/null || true; wait "$pid" "$tpid" 2>/dev/null || true
  if [ "$backend" = postgres ]; then psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null; fi
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break; sleep 0.1; done
base=http://127.0.0.1:$port
python3 bench/capture_latency.py "$base" "$donations" > "$work/latency.txt"
campaign=$(head -n1 "$work/latency.txt")
echo "== $backend: GET /api/v1/totals/campaigns/{id}, 64 connections, $duration"
rate() { tee /dev/stderr | awk '/^Requests\/sec/ {print $2}'; }
ours=$(wrk -t2 -c64 -d"$duration" --latency "$base/api/v1/totals/campaigns/$campaign" | rate)
echo "== trivial axum handler, same body size, 64 connections, $duration"
ceiling=$(wrk -t2 -c64 -d"$duration" --latency "http://127.0.0.1:8199/totals" | rate)
awk -v a="$ours" -v b="$ceiling" 'BEGIN {printf "ratio: %.2f of the trivial server (target 0.60)\n", a / b}'
echo "== $backend: CAPTURED webhook → totals changed, $donations donations"
tail -n +2 "$work/latency.txt"
curl -s "$base/api/v1/totals/campaigns/$campaign"; echo
curl -s "$base/api/v1/totals/campaigns/$campaign?realtime=true"; echo
