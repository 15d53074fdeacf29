#!/usr/bin/env bash
# The database's ceiling for donation writes: pgbench running the server's own statements for one
# donation (bench/ceiling/donation.sql) on a fresh database with our migrations, then the server
# itself (release build) on another fresh database with wrk at the same concurrency; prints both
# and the ratio. Same machine, same run. pgbench's own p99 is printed beside the server's: the
# latency the database itself gives at this concurrency.
# Usage: bench/ceiling.sh [PG_ADMIN_URL]   (CLIENTS=64 DURATION=20; SCRIPT= another pgbench script,
# BIN= another build of the server)
set -euo pipefail
cd "$(dirname "$0")/.."
admin=${1:-postgres://postgres@127.0.0.1:5432/postgres}
clients=${CLIENTS:-64}
seconds=${DURATION:-20}
port=${PORT:-8108}
bin=${BIN:-"${CARGO_TARGET_DIR:-$HOME/.cache/cfa-target}/release/cfa-server"}
[ -x "$bin" ] || { echo "build first: cargo build --release -p cfa-server" >&2; exit 2; }
for tool in pgbench wrk psql; do
  command -v $tool >/dev/null || { echo "install $tool first (apt-get install postgresql-client wrk)" >&2; exit 2; }
done
db=cfa_ceiling_$$
work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
  psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
  psql "$admin" -qc "DROP DATABASE IF EXISTS ${db}_server WITH (FORCE)" >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
start_server() { # url
  CFA_LISTEN=127.0.0.1:$port CFA_DATA_DIR=$work CFA_LOG__LEVEL=warn CFA_DATABASE_URL=$1 \
    CFA_GATEWAY__RATE_LIMIT__ENABLED=false "$bin" run >>"$work/server.log" 2>&1 & pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null && return; sleep 0.1; done
  echo "the server did not start:" >&2; cat "$work/server.log" >&2; exit 3
}
campaign() {
  curl -sf -XPOST "http://127.0.0.1:$port/api/v1/campaigns" -H 'content-type: application/json' \
    -d '{"title":"ceiling","goal_amount":1000000}' | python3 -c 'import sys,json;print(json.load(sys.stdin)["id"])'
}

# 1. pgbench on a database migrated by the server (then stopped: pgbench has it alone).
psql "$admin" -qc "CREATE DATABASE $db" >/dev/null
url=${admin%/*}/$db
start_server "$url"
id=$(campaign)
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
script=$(realpath "${SCRIPT:-bench/ceiling/donation.sql}")
ceiling=$(cd "$work" && pgbench -n -M prepared -c "$clients" -j 2 -T "$seconds" -D campaign="$id" \
  -f "$script" --log --log-prefix=pgbench "$url" | awk '/^tps/ {print int($3)}')
p99=$(cat "$work"/pgbench.* | awk '{print $3}' | sort -n | awk '{v[NR]=$1} END {printf "%.2fms", v[int(NR*0.99)]/1000}')
echo "pgbench, the server's statements, $clients clients: $ceiling donations/s, p99 $p99"

# 2. The server, on a fresh database, same concurrency.
psql "$admin" -qc "CREATE DATABASE ${db}_server" >/dev/null
start_server "${admin%/*}/${db}_server"
id=$(campaign)
served=$(CAMPAIGN=$id wrk -t2 -c"$clients" -d"${seconds}s" --latency -s bench/post_donation.lua "http://127.0.0.1:$port" \
  | tee "$work/wrk.txt" | awk '/Requests\/sec/ {print int($2)}')
grep -E ' 99%|Non-2xx' "$work/wrk.txt" || true
echo "cfa-server POST /api/v1/donations, $clients connections: $served donations/s"
python3 -c "print(f'ratio: {$served / $ceiling:.0%} of the ceiling')"
