#!/usr/bin/env bash
# The engine's own cost, on a release build: plan and no-op run of a fully cached
# matrix, and the rate of cheap uncached steps. Prints one line per figure.
# Usage: benches/engine.sh [CELLS]   (default 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
cells=${1:-10000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pipeline/target}"
# PIPELINE_BIN: an already built release binary (cargo bench and cargo build enable
# different dependency features, so switching between them rebuilds polars).
if [[ -n "${PIPELINE_BIN:-}" ]]; then
  bin=$(realpath "$PIPELINE_BIN")
else
  cargo build --release --locked --quiet
  bin="$CARGO_TARGET_DIR/release/pipeline"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r benches "$work/"
cd "$work"
mkdir -p experiments

best() { # best-of-3 wall seconds and peak RSS of a command
  local best_s=999 best_kb=0
  for _ in 1 2 3; do
    /usr/bin/time -f "%e %M" -o t.txt "$@" > /dev/null 2> err.txt || { cat err.txt; exit 1; }
    read -r s kb < t.txt
    if awk "BEGIN{exit !($s < $best_s)}"; then best_s=$s; best_kb=$kb; fi
  done
  echo "$best_s s, $((best_kb / 1024)) MB"
}

benches/gen_matrix.sh "$cells" big > experiments/big.toml
start=$(date +%s.%N)
"$bin" run experiments/big.toml -j 2 > /dev/null 2> populate.log || { tail populate.log; exit 1; }
end=$(date +%s.%N)
echo "populate $cells cells ($(grep -o '[0-9]* ran' populate.log)): $(awk "BEGIN{printf \"%.1f\", $end - $start}") s"
echo "plan, $cells cells all cached: $(best "$bin" plan experiments/big.toml)"
echo "no-op run, $cells cells all cached: $(best "$bin" run experiments/big.toml)"

benches/gen_matrix.sh 10000 steps > experiments/steps.toml   # 1,000 seeds → 1,000 datagen steps
start=$(date +%s.%N)
# A cache of its own: the big matrix above already holds these datagen entries.
"$bin" --cache steps-cache run experiments/steps.toml --kind datagen -j 2 > /dev/null 2> steps.log
end=$(date +%s.%N)
n=$(grep -c '^done   datagen' steps.log)
echo "uncached datagen steps: $n in $(awk "BEGIN{printf \"%.2f\", $end - $start}") s = $(awk "BEGIN{printf \"%.0f\", $n / ($end - $start)}") steps/s"
