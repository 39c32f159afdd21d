#!/usr/bin/env bash
# Install everything the test suite needs into the current Python environment, then run it (CPU only).
# .ci/comfyui_env.sh pins torch to the registry's build that has a matching torchvision (the end-to-end
# tests start a real ComfyUI, which imports torchvision), finds ComfyUI 0.3.64 (COMFYUI_PATH, else the
# project's shared copy, else a clone of tag v0.3.64), installs its run-time needs, and prints its path.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --upgrade pip
comfyui_host="$(PYTHON=python bash .ci/comfyui_env.sh | tail -n 1)"
python -m pip install --quiet -c <(printf 'torch==2.15.0\ntorchvision==0.29.2\n') -e ".[test]"
export COMFYUI_PATH="${COMFYUI_PATH:-$comfyui_host}"
echo "ComfyUI for the end-to-end tests: $COMFYUI_PATH"
python -m pytest "$@"
