#!/usr/bin/env bash
# Installs Debian's Chromium for the report layout test, once per machine, and prints
# the binary's path. Needs root (or sudo) and the Debian package mirror.
set -euo pipefail
for b in chromium chromium-browser; do
    if command -v "$b" >/dev/null; then
        command -v "$b"
        exit 0
    fi
done
sudo=""
if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || { echo "install-chromium: needs root or sudo" >&2; exit 1; }
    sudo="sudo -n"
fi
echo "install-chromium: apt-get install chromium (about a minute the first time)" >&2
$sudo apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >&2
command -v chromium
