#!/usr/bin/env bash
# Conversations from a large file: a generated OpenAI chat JSONL of about 1 GB
# (850,000 conversations of three turns, images by path), planned with batch sizes 1
# to 64 over three seeds. Prints the file's size, and the wall time and peak memory
# (max RSS) of `pipeline plan`, which scans the whole file once and reads the drawn
# conversations (and their images) again: memory stays bounded by a record and the
# 8-byte index entry per conversation, not by the file.
# Usage: benches/conversations.sh   (PIPELINE_BIN=path to time another build)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pipeline/target}"
bin=${PIPELINE_BIN:-}
if [[ -z "$bin" ]]; then
  cargo build --release --locked --quiet
  bin="$CARGO_TARGET_DIR/release/pipeline"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/experiments" "$work/data/images"
cp experiments/data/conversations/images/scene-*.png "$work/data/images/"
python3 - "$work/data/chat.jsonl" <<'PY'
import json, sys
filler = "Describe what changed since the previous photo, in detail, please. " * 4
with open(sys.argv[1], "w") as f:
    for i in range(850_000):
        messages = [{"role": "system", "content": "You are a careful assistant."}]
        for t in range(3):
            image = f"images/scene-{(i + t) % 6 + 1}.png"
            messages.append({"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": f"{filler} ({i}.{t})"}]})
            messages.append({"role": "assistant", "content": "The light turned green and the cyclist crossed."})
        f.write(json.dumps({"id": f"c{i}", "messages": messages}) + "\n")
PY
cat > "$work/experiments/big.toml" <<'TOML'
name = "big"
[models.m]
backend = "sim"
[workload]
conversations = "data/chat.jsonl"
turns = 3
[matrix]
model = ["m"]
seed = [1337, 66, 88]
batch-size = [1, 4, 16, 64]
TOML
size=$(du -m "$work/data/chat.jsonl" | cut -f1)
cd "$work"
/usr/bin/time -f "%e %M" -o time.txt "$bin" plan experiments/big.toml > /dev/null
read -r secs kb < time.txt
echo "file: ${size} MiB, 850000 conversations"
echo "pipeline plan: ${secs} s, peak memory ${kb} kB ($(( kb / 1024 )) MiB)"
