#!/usr/bin/env bash
# Write an experiment with CELLS cells (10 simulated models × CELLS/10 seeds) whose
# steps are as cheap as a step can be: one turn, one 28×28 image, one output token,
# no simulated latency. Used by benches/engine.sh to measure the engine's own cost.
# Usage: benches/gen_matrix.sh CELLS NAME > experiment.toml
set -euo pipefail
cells=${1:?cells}
name=${2:-bench}
seeds=$(( (cells + 9) / 10 ))
echo "name = \"$name\""
for m in $(seq 0 9); do
  cat <<TOML
[models.m$m]
backend = "sim"
sim = { ttft-base-ms = 0.0, prefill-us-per-token = 0.0, itl-base-ms = 0.0, itl-us-per-inflight = 0.0, jitter = 0.0, answer-tokens = 1 }
TOML
done
cat <<TOML
[workload]
turns = 1
resolution = "28x28"
max-tokens = 1
warmup-requests = 0
[matrix]
model = [$(seq -s, 0 9 | sed 's/\([0-9]\+\)/"m\1"/g')]
seed = [$(seq -s, 1 "$seeds")]
[report]
dir = "reports/$name"
TOML
