#!/usr/bin/env bash
# End-to-end lag from a donation's commit to its consumers' effect, at a steady ~500 donations/s
# (wrk -c6, each connection pausing 8 ms between requests: bench/post_donation_paced.lua), on an
# all-in-one server on PostgreSQL and RabbitMQ; the lag of each event is
# consumer_inbox.processed_at − outbox.occurred_at.
# Usage: bench/lag.sh [PG_ADMIN_URL] [AMQP_URL]
set -euo pipefail
cd "$(dirname "$0")/.."
admin=${1:-postgres://postgres@127.0.0.1:5432/postgres}
amqp=${2:-amqp://guest:guest@127.0.0.1:5672/%2f}
duration=${DURATION:-20s}
port=${PORT:-8107}
bin=${BIN:-"${CARGO_TARGET_DIR:-$HOME/.cache/cfa-target}/release/cfa-server"}
[ -x "$bin" ] || { echo "build first: cargo build --release -p cfa-server" >&2; exit 2; }
db=cfa_bench_$$
psql "$admin" -qc "CREATE DATABASE $db" >/dev/null
url=${admin%/*}/$db
work=$(mktemp -d)
export CFA_LISTEN=127.0.0.1:$port CFA_DATA_DIR=$work CFA_LOG__LEVEL=warn CFA_DATABASE_URL=$url
export CFA_AMQP_URL=$amqp CFA_AMQP__NAMESPACE="lag$$."
export CFA_GATEWAY__RATE_LIMIT__ENABLED=false
"$bin" run >"$work/server.log" 2>&1 & pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break; sleep 0.1; done
campaign=$(curl -sf -XPOST "http://127.0.0.1:$port/api/v1/campaigns" -H 'content-type: application/json' \
  -d '{"title":"lag","goal_amount":1000000}' | python3 -c 'import sys,json;print(json.load(sys.stdin)["id"])')
CAMPAIGN=$campaign wrk -t1 -c"${CONNECTIONS:-6}" -d"$duration" -s bench/post_donation_paced.lua "http://127.0.0.1:$port" | grep -E "requests in|Non-2xx"
for _ in $(seq 1 120); do
  [ "$(psql "$url" -tAc "SELECT count(*) FROM outbox o WHERE NOT EXISTS (SELECT 1 FROM consumer_inbox i WHERE i.event_id = o.event_id AND i.consumer = 'totals') AND o.event_type LIKE 'donation.%'")" = 0 ] && break
  sleep 0.5
done
psql "$url" -tA -F' ' <<'SQL'
SELECT 'donations created: ' || count(*) || ' (' || round(count(*) / EXTRACT(EPOCH FROM max(created_at) - min(created_at))) || '/s)'
  FROM donations;
SELECT 'lag ' || i.consumer || ': p50 ' || round(1000 * percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM i.processed_at - o.occurred_at))::numeric, 1)
       || ' ms, p99 ' || round(1000 * percentile_cont(0.99) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM i.processed_at - o.occurred_at))::numeric, 1)
       || ' ms, max ' || round(1000 * max(EXTRACT(EPOCH FROM i.processed_at - o.occurred_at))::numeric, 1) || ' ms over ' || count(*) || ' events'
  FROM consumer_inbox i JOIN outbox o ON o.event_id = i.event_id
 WHERE o.event_type = 'donation.created'
 GROUP BY i.consumer;
SQL
