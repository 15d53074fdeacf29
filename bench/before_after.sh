#!/usr/bin/env bash
# Every benchmark of issue #14, for two builds of cfa-server in one sitting (same machine, same
# load, back to back), for docs/PERFORMANCE.md's before/after table. Usage:
#   bench/before_after.sh BEFORE_BIN [AFTER_BIN]   (AFTER_BIN: the release build)
# e.g. build the old commit in a worktree, copy its target/release/cfa-server aside, then run
# this. Prints each benchmark's own output under a `#### name: build` header; takes ~25 min.
# STEADY_SECONDS, DURATION and N shorten or lengthen the runs.
set -uo pipefail
cd "$(dirname "$0")/.."
before=${1:?usage: bench/before_after.sh BEFORE_BIN [AFTER_BIN]}
after=${2:-${CARGO_TARGET_DIR:-$HOME/.cache/cfa-target}/release/cfa-server}
n=${N:-4000}
run() { echo; echo "#### $1: $2"; shift 2; "$@" 2>&1 | grep -vE '^\s*$'; }
for side in before after; do
  bin=$before; [ "$side" = after ] && bin=$after
  script=bench/ceiling/donation.sql; [ "$side" = before ] && script=bench/ceiling/donation-before-14.sql
  run "writes, SQLite (bench/run.sh)" "$side" env BIN="$bin" DURATION="${DURATION:-10}s" CONNECTIONS=64 bench/run.sh sqlite
  run "writes, PostgreSQL (bench/ceiling.sh, $script)" "$side" env BIN="$bin" SCRIPT="$script" DURATION="${DURATION:-10}" bench/ceiling.sh
  run "burst of $n, SQLite (bench/spike.sh)" "$side" env BIN="$bin" bench/spike.sh sqlite "$n"
  run "burst of $n, PostgreSQL (bench/spike.sh)" "$side" env BIN="$bin" bench/spike.sh postgres "$n"
  run "totals reads, SQLite (bench/totals.sh)" "$side" env BIN="$bin" DURATION="${DURATION:-10}s" DONATIONS=200 bench/totals.sh sqlite
  for backend in sqlite postgres; do
    run "journeys, $backend (bench/journeys.sh)" "$side" env BIN="$bin" STEADY_SECONDS="${STEADY_SECONDS:-30}" bench/journeys.sh "$backend"
  done
done
