#!/usr/bin/env bash
# Set up the current Python environment to run the end-to-end tests (tests/comfyui) inside ComfyUI
# 0.3.64, and print that ComfyUI's path (export it as COMFYUI_PATH).
#
#   COMFYUI_PATH="$(bash .ci/comfyui_env.sh | tail -n 1)" python -m pytest tests/comfyui -q
#
# Where the host comes from, first found wins:
#   1. COMFYUI_PATH, if it is set (any ComfyUI source tree that knows Wan2.2);
#   2. the project's shared copy, shared/comfyui/ComfyUI-0.3.64 inside or beside the checkout (CI);
#   3. a shallow clone of Comfy-Org/ComfyUI at tag v0.3.64 into .cache/ComfyUI-0.3.64 (needs github.com).
# The tree is only read: the tests copy it to a scratch folder before starting it.
#
# torch/torchvision are pinned to the pair this project tests with; torchaudio is left out (the
# registry has none that matches torch 2.15; ComfyUI then skips its audio nodes and runs on).
# Progress goes to stderr, the path to stdout.
set -euo pipefail

PYTHON="${PYTHON:-python}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONSTRAINTS="$(mktemp)"
REQUIREMENTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS" "$REQUIREMENTS"' EXIT
printf 'torch==2.15.0\ntorchvision==0.29.2\n' > "$CONSTRAINTS"

pip_install() { "$PYTHON" -m pip install --quiet --disable-pip-version-check "$@" >&2; }

host="${COMFYUI_PATH:-}"
if [ -z "$host" ]; then
    for candidate in "$REPO_ROOT/shared/comfyui/ComfyUI-0.3.64" "$REPO_ROOT/../shared/comfyui/ComfyUI-0.3.64"; do
        if [ -f "$candidate/main.py" ]; then host="$(cd "$candidate" && pwd)"; break; fi
    done
fi
if [ -z "$host" ]; then
    host="$REPO_ROOT/.cache/ComfyUI-0.3.64"
    if [ ! -f "$host/main.py" ]; then
        echo "No shared ComfyUI 0.3.64 copy found; cloning tag v0.3.64 into $host" >&2
        git clone --quiet --depth 1 --branch v0.3.64 https://github.com/Comfy-Org/ComfyUI.git "$host" >&2 || {
            echo "Could not get ComfyUI 0.3.64: set COMFYUI_PATH to a ComfyUI 0.3.64 source tree." >&2; exit 1; }
    fi
fi
if [ ! -f "$host/main.py" ] || [ ! -f "$host/requirements.txt" ]; then
    echo "$host: no main.py/requirements.txt; expected a ComfyUI source tree (0.3.64)." >&2
    exit 1
fi

pip_install "torch==2.15.0" "torchvision==0.29.2"
# The host's own requirements, less the torch family (pinned above; torchaudio left out, see top).
grep -v -E '^\s*(#|$)|^\s*(torch|torchvision|torchaudio)\s*([<>=!~;].*)?$' "$host/requirements.txt" > "$REQUIREMENTS"
pip_install -c "$CONSTRAINTS" -r "$REQUIREMENTS"
# This pack's own requirements, and pytest.
pip_install -c "$CONSTRAINTS" -r "$REPO_ROOT/requirements.txt" pytest

echo "$host"
