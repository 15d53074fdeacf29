#!/usr/bin/env bash
# A burst of donors: starts a release build of cfa-server on a fresh database, creates a
# campaign, releases N donation requests at the same instant (bench/spike.py: one connection
# and one Idempotency-Key each) and prints the answers by status and code, the slowest answer,
# and the share answered 201. Exits 1 if any answer is not 201. Usage:
#   bench/spike.sh sqlite [N]                 # embedded SQLite (N defaults to 4000)
#   bench/spike.sh postgres [N] [ADMIN_URL]   # a fresh database on that server
# BIN selects another build (to compare two in one sitting); CFA_* variables pass through
# (e.g. CFA_ADMISSION__MAX_IN_FLIGHT=1000000 turns the admission queue off).
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-sqlite}
n=${2:-4000}
port=${PORT:-8120}
target=${CARGO_TARGET_DIR:-$HOME/.cache/cfa-target}
bin=${BIN:-$target/release/cfa-server}
[ -x "$bin" ] || { echo "build first: cargo build --release -p cfa-server" >&2; exit 2; }
# One connection per request: the burst needs as many descriptors.
ulimit -n "$(( n + 1024 ))" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
export CFA_LOG__LEVEL=${CFA_LOG__LEVEL:-warn} CFA_GATEWAY__RATE_LIMIT__ENABLED=false
# shellcheck source=bench/server.sh
. bench/server.sh
start_server "$bin" "$backend" "${3:-}"

campaign=$(curl -sf -XPOST "$base/api/v1/campaigns" -H 'content-type: application/json' \
  -d '{"title":"spike","goal_amount":100000000}' | python3 -c 'import sys,json;print(json.load(sys.stdin)["id"])')
echo "== $backend: $n donations at once ($bin)"
status=0
python3 bench/spike.py "$base" "$campaign" "$n" || status=$?
exit "$status"
