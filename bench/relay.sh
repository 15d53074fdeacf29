#!/usr/bin/env bash
# How fast the outbox drains: fills it with the relay off (wrk POSTing donations for $FILL),
# then starts a server with the relay on and times until it is empty. On RabbitMQ (the default)
# that is the relay's throughput with publisher confirms; with AMQP_URL=in-process it is the
# whole in-process pipeline, since that bus counts an event published only once every consumer
# has committed it. PostgreSQL as on the development machine; $BIN compares builds.
# Usage: bench/relay.sh [PG_ADMIN_URL] [AMQP_URL | in-process]
set -euo pipefail
cd "$(dirname "$0")/.."
admin=${1:-postgres://postgres@127.0.0.1:5432/postgres}
amqp=${2:-amqp://guest:guest@127.0.0.1:5672/%2f}
fill=${FILL:-10s}
port=${PORT:-8106}
bin=${BIN:-"${CARGO_TARGET_DIR:-$HOME/.cache/cfa-target}/release/cfa-server"}
[ -x "$bin" ] || { echo "build first: cargo build --release -p cfa-server" >&2; exit 2; }
db=cfa_bench_$$
ns="bench$$."
psql "$admin" -qc "CREATE DATABASE $db" >/dev/null
url=${admin%/*}/$db
work=$(mktemp -d)
export CFA_LISTEN=127.0.0.1:$port CFA_DATA_DIR=$work CFA_LOG__LEVEL=warn CFA_GATEWAY__RATE_LIMIT__ENABLED=false CFA_DATABASE_URL=$url
if [ "$amqp" = in-process ]; then
  bus="in-process bus: every consumer committed"
else
  export CFA_AMQP_URL=$amqp CFA_AMQP__NAMESPACE=$ns
  bus="publisher confirms"
fi
pid=
cleanup() {
  [ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
  psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
wait_ready() { for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null && return; sleep 0.1; done; }

CFA_OUTBOX__RELAY_ENABLED=false "$bin" run >"$work/fill.log" 2>&1 & pid=$!
wait_ready
campaign=$(curl -sf -XPOST "http://127.0.0.1:$port/api/v1/campaigns" -H 'content-type: application/json' \
  -d '{"title":"relay","goal_amount":1000000}' | python3 -c 'import sys,json;print(json.load(sys.stdin)["id"])')
CAMPAIGN=$campaign wrk -t2 -c32 -d"$fill" -s bench/post_donation.lua "http://127.0.0.1:$port" | grep -E "requests in|Requests/sec"
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
pending() { psql "$url" -tAc "SELECT count(*) FROM outbox WHERE sent_at IS NULL"; }
total=$(pending)
echo "== outbox holds $total events; starting the relay"
"$bin" run >"$work/relay.log" 2>&1 & pid=$!
start=$(date +%s.%N)
while [ "$(pending)" -gt 0 ]; do sleep 0.2; done
end=$(date +%s.%N)
python3 -c "t=$end-$start; print(f'drained {$total} events in {t:.2f} s: {$total/t:.0f} events/s ($bus, one relay)')"
