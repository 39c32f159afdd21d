#!/usr/bin/env bash
# Set up the current Python environment ($PYTHON, default python) to run the ComfyUI tests inside one
# tested host, and print that host's path (give it to the tests as COMFYUI_PATH).
#
#   COMFYUI_PATH="$(bash .ci/comfyui_env.sh 0.3.64 | tail -n 1)" python -m pytest tests/comfyui -q
#
# VERSION is a first column of .ci/comfyui_hosts (default: its first row); .ci/comfyui_host.sh finds the
# tree. Installs: torch/torchvision pinned to the pair this project tests with, the row's --no-deps extras
# (0.33.0: torchaudio 2.11.1, which works beside torch 2.15 although it asks for another torch; 0.3.64 runs
# without torchaudio, skipping its audio nodes), the host's own requirements.txt less the torch family,
# and this pack's requirements.txt with pytest. Progress goes to stderr, the path to stdout.
set -euo pipefail

PYTHON="${PYTHON:-python}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOSTS_FILE="$REPO_ROOT/.ci/comfyui_hosts"
version="${1:-$(awk '!/^#/ && NF {print $1; exit}' "$HOSTS_FILE")}"
host="$(bash "$REPO_ROOT/.ci/comfyui_host.sh" "$version" | tail -n 1)"
extras="$(awk -v v="$version" '!/^#/ && $1 == v {for (i = 3; i <= NF; i++) if ($i != "-") printf "%s ", $i}' "$HOSTS_FILE")"

CONSTRAINTS="$(mktemp)"
REQUIREMENTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS" "$REQUIREMENTS"' EXIT
printf 'torch==2.15.0\ntorchvision==0.29.2\n' > "$CONSTRAINTS"

pip_install() { "$PYTHON" -m pip install --quiet --disable-pip-version-check "$@" >&2; }

pip_install "torch==2.15.0" "torchvision==0.29.2"
if [ -n "$extras" ]; then
    # shellcheck disable=SC2086  # a list of requirement specifiers
    pip_install --no-deps $extras
fi
# The host's own requirements, less the torch family (pinned above; torchaudio only as an extra).
grep -v -E '^\s*(#|$)|^\s*(torch|torchvision|torchaudio)\s*([<>=!~;].*)?$' "$host/requirements.txt" > "$REQUIREMENTS"
pip_install -c "$CONSTRAINTS" -r "$REQUIREMENTS"
# This pack's own requirements, and pytest.
pip_install -c "$CONSTRAINTS" -r "$REPO_ROOT/requirements.txt" pytest

echo "$host"
