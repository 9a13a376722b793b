#!/usr/bin/env bash
# A peer client on the same scripted simulator as `cargo bench --bench sim`: NVIDIA's
# AIPerf (pip install aiperf), closed loop at concurrency 1, 16, 64 and 256. Prints one
# Markdown row per concurrency: TTFT error (measured minus the scripted 50 ms),
# inter-token error (minus 10 ms) and the served rate against the ideal.
#
# Needs the PyPI registry once (the venv is kept in ~/.cache/pipeline/aiperf-venv).
# AIPerf wants a tokenizer: a tiny word-level one is written into a private HF cache, so
# nothing is fetched from the Hugging Face hub (token counts come from the server).
# Usage: benches/aiperf.sh   (uses the release build, like the sim bench)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pipeline/target}"
bin=${PIPELINE_BIN:-}
if [[ -z "$bin" ]]; then
  cargo build --release --locked --quiet
  bin="$CARGO_TARGET_DIR/release/pipeline"
fi
venv="$HOME/.cache/pipeline/aiperf-venv"
[[ -x "$venv/bin/aiperf" ]] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q aiperf==0.13.0; }
export HF_HOME="$HOME/.cache/pipeline/hf" HF_HUB_OFFLINE=1
snap="$HF_HOME/hub/models--local--words/snapshots/0000000000000000000000000000000000000000"
if [[ ! -f "$snap/tokenizer.json" ]]; then
  mkdir -p "$snap" "$HF_HOME/hub/models--local--words/refs"
  printf 0000000000000000000000000000000000000000 > "$HF_HOME/hub/models--local--words/refs/main"
  "$venv/bin/python" - "$snap" <<'PY'
import json, string, sys
from tokenizers import Tokenizer, models, pre_tokenizers
words = ["[UNK]", "the", "image", "shows", "a", "red", "square", "near", "blue", "circle", "on", "gradient", "background"]
tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words + list(string.ascii_lowercase))}, unk_token="[UNK]"))
tok.pre_tokenizer = pre_tokenizers.Whitespace()
tok.save(f"{sys.argv[1]}/tokenizer.json")
json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]"}, open(f"{sys.argv[1]}/tokenizer_config.json", "w"))
PY
fi
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" sim-server --port "$port" --served-model-name bench --ttft-base-ms 50 --prefill-us-per-token 0 \
  --itl-base-ms 10 --itl-us-per-inflight 0 --jitter 0 --answer-tokens 64 > "$work/sim.log" 2>&1 &
sim=$!
trap 'kill $sim 2>/dev/null; rm -rf "$work"' EXIT
sleep 1
echo "| concurrency | TTFT error p50 / p99 (ms) | inter-token error p50 (ms) | served / ideal rate |"
echo "|---|---|---|---|"
for c in 1 16 64 256; do
  n=$((c * 10 > 40 ? c * 10 : 40))
  "$venv/bin/aiperf" profile --model bench --url "http://127.0.0.1:$port" --endpoint-type chat --streaming \
    --concurrency "$c" --request-count "$n" --warmup-request-count "$c" --tokenizer local/words \
    --use-server-token-count --output-tokens-mean 64 --ui none --artifact-dir "$work/c$c" > "$work/c$c.log" 2>&1 \
    || { tail -20 "$work/c$c.log"; exit 1; }
  python3 - "$work/c$c/profile_export_aiperf.json" "$c" <<'PY'
import json, sys
d, c = json.load(open(sys.argv[1])), int(sys.argv[2])
ttft, itl = d["time_to_first_token"], d["inter_token_latency"]
ideal = c * 64 / (0.050 + 63 * 0.010)  # tokens per second with every stream busy
print(f"| {c} | {ttft['p50'] - 50:+.3f} / {ttft['p99'] - 50:+.3f} | {itl['p50'] - 10:+.3f} | {100 * d['output_token_throughput']['avg'] / ideal:.1f}% |")
PY
done
