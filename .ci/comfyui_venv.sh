#!/usr/bin/env bash
# A virtual environment of its own for one tested ComfyUI host (hosts pin different frontends and
# packages): built at VENV_DIR with .ci/comfyui_env.sh and this project (-e .[test]), or reused as it is
# when nothing it was built from has changed (the stamp file inside). Prints the host's path.
#
#   bash .ci/comfyui_venv.sh 0.33.0 .venv-comfyui-0.33.0
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="$1"
venv="$2"
host="$(bash "$REPO_ROOT/.ci/comfyui_host.sh" "$version" | tail -n 1)"
stamp="$({ echo "$REPO_ROOT $host"; python3 --version; cat "$REPO_ROOT/.ci/comfyui_hosts" "$REPO_ROOT/.ci/comfyui_env.sh" \
    "$REPO_ROOT/.ci/comfyui_venv.sh" "$REPO_ROOT/pyproject.toml" "$REPO_ROOT/requirements.txt" "$host/requirements.txt"; } \
    | sha256sum | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.worldwander-stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "ComfyUI $version environment is up to date: $venv" >&2
else
    echo "Building the ComfyUI $version environment: $venv" >&2
    if [ -e "$venv" ]; then
        [ -f "$venv/pyvenv.cfg" ] || { echo "$venv exists and is not a virtual environment; not replacing it." >&2; exit 1; }
        rm -rf "$venv"
    fi
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
    if [ "$(awk '!/^#/ && NF {print $1; exit}' "$REPO_ROOT/.ci/comfyui_hosts")" = "$version" ]; then
        COMFYUI_PATH="$host" PYTHON="$venv/bin/python" bash "$REPO_ROOT/.ci/comfyui_env.sh" "$version" > /dev/null
    else
        env "COMFYUI_PATH_${version//./_}=$host" PYTHON="$venv/bin/python" bash "$REPO_ROOT/.ci/comfyui_env.sh" "$version" > /dev/null
    fi
    (cd "$REPO_ROOT" && "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -c <(printf 'torch==2.15.0\ntorchvision==0.29.2\n') -e ".[test]" >&2)
    echo "$stamp" > "$venv/.worldwander-stamp"
fi
echo "$host"
