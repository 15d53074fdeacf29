#!/usr/bin/env bash
# 1,000 viewers of one campaign's live totals stream on a fresh SQLite server: database reads per
# change and fan-out time (bench/viewers.py). Usage: bench/viewers.sh [VIEWERS] [CHANGES]
# Build first: cargo build --release -p cfa-server (PROFILE=debug uses a debug build).
set -euo pipefail
cd "$(dirname "$0")/.."
viewers=${1:-1000}
changes=${2:-20}
port=${PORT:-8103}
target=${CARGO_TARGET_DIR:-$HOME/.cache/cfa-target}
bin="$target/${PROFILE:-release}/cfa-server"
[ -x "$bin" ] || { echo "build first: cargo build --release -p cfa-server" >&2; exit 2; }
ulimit -n 65536 2>/dev/null || ulimit -n 4096
work=$(mktemp -d)
export CFA_LISTEN=127.0.0.1:$port CFA_DATA_DIR=$work CFA_LOG__LEVEL=warn CFA_GATEWAY__RATE_LIMIT__ENABLED=false
"$bin" run >"$work/server.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break; sleep 0.1; done
python3 bench/viewers.py "http://127.0.0.1:$port" "$viewers" "$changes"
echo "server RSS: $(awk '/VmRSS/ {print $2 " kB"}' /proc/$pid/status)"
