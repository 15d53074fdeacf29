#!/usr/bin/env bash
# Times `cfa-release plan` on a synthetic history (bench/release_history.py): COMMITS commits on
# main (default 10,000, a merge every 20th), COMPONENTS components (default 10), first with no
# tags (every component walks the whole history) and then with every component tagged halfway.
# Usage: cargo build --release -p cfa-release && bench/release_plan.sh
set -euo pipefail
cd "$(dirname "$0")/.."
COMMITS=${COMMITS:-10000}
COMPONENTS=${COMPONENTS:-10}
RUNS=${RUNS:-5}
bin=${CARGO_TARGET_DIR:-target}/release/cfa-release
[ -x "$bin" ] || { echo "build it first: cargo build --release -p cfa-release" >&2; exit 2; }
repo=$(mktemp -d)
trap 'rm -rf "$repo"' EXIT
git -C "$repo" init -q -b main
python3 bench/release_history.py "$COMMITS" "$COMPONENTS" 20 | git -C "$repo" fast-import --quiet
git -C "$repo" checkout -q main
{
  for ((k = 0; k < COMPONENTS; k++)); do
    printf '[[components]]\nname = "comp%d"\npaths = ["comp%d/**"]\n' "$k" "$k"
    (( k > 0 )) && printf 'depends_on = ["comp0"]\n'
    printf '\n'
  done
} > "$repo/release.toml"
echo "history: $(git -C "$repo" rev-list --count HEAD) commits ($(git -C "$repo" rev-list --first-parent --count HEAD) first-parent), $COMPONENTS components"
time_plan() {
  local best=999999
  for ((r = 0; r < RUNS; r++)); do
    local start end ms
    start=$(date +%s%N)
    "$bin" --repo "$repo" --config "$repo/release.toml" plan --output json > /dev/null
    end=$(date +%s%N)
    ms=$(( (end - start) / 1000000 ))
    (( ms < best )) && best=$ms
  done
  echo "$1: best of $RUNS: ${best} ms"
}
time_plan "no tags (first release, whole history)"
half=$(git -C "$repo" rev-list --first-parent HEAD | sed -n "$((COMMITS / 2))p")
for ((k = 0; k < COMPONENTS; k++)); do git -C "$repo" tag "comp$k-v1.0.0" "$half"; done
time_plan "every component tagged $((COMMITS / 2)) commits back"
"$bin" --repo "$repo" --config "$repo/release.toml" plan | head -4
