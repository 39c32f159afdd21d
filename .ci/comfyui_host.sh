#!/usr/bin/env bash
# Find (or fetch) the source tree of one tested ComfyUI host and print its path.
#
#   bash .ci/comfyui_host.sh [VERSION]      # VERSION: a first column of .ci/comfyui_hosts (default: the first row)
#
# Where the host comes from, first found wins:
#   1. the host's variable, if set: COMFYUI_PATH for the primary host (the first row), COMFYUI_PATH_<version
#      with dots as underscores> for the others (e.g. COMFYUI_PATH_0_33_0);
#   2. the project's shared copy, shared/comfyui/ComfyUI-<version> inside or beside the checkout (CI);
#   3. a shallow fetch of the row's git ref of Comfy-Org/ComfyUI into .cache/ComfyUI-<version> (needs github.com).
# The tree is only read: the tests copy it to a scratch folder before starting it.
# Progress goes to stderr, the path to stdout.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOSTS_FILE="$REPO_ROOT/.ci/comfyui_hosts"
primary="$(awk '!/^#/ && NF {print $1; exit}' "$HOSTS_FILE")"
version="${1:-$primary}"
row="$(awk -v v="$version" '!/^#/ && $1 == v' "$HOSTS_FILE")"
if [ -z "$row" ]; then
    echo "ComfyUI $version is not a tested host; .ci/comfyui_hosts lists: $(awk '!/^#/ && NF {printf "%s ", $1}' "$HOSTS_FILE")" >&2
    exit 2
fi
ref="$(echo "$row" | awk '{print $2}')"
if [ "$version" = "$primary" ]; then variable=COMFYUI_PATH; else variable="COMFYUI_PATH_${version//./_}"; fi

host="${!variable:-}"
if [ -z "$host" ]; then
    for candidate in "$REPO_ROOT/shared/comfyui/ComfyUI-$version" "$REPO_ROOT/../shared/comfyui/ComfyUI-$version"; do
        if [ -f "$candidate/main.py" ]; then host="$(cd "$candidate" && pwd)"; break; fi
    done
fi
if [ -z "$host" ]; then
    host="$REPO_ROOT/.cache/ComfyUI-$version"
    if [ ! -f "$host/main.py" ]; then
        echo "No shared ComfyUI $version copy found; fetching $ref of Comfy-Org/ComfyUI into $host" >&2
        rm -rf "$host" && mkdir -p "$host"
        { git -C "$host" init --quiet && git -C "$host" fetch --quiet --depth 1 https://github.com/Comfy-Org/ComfyUI.git "$ref" \
            && git -C "$host" checkout --quiet FETCH_HEAD; } >&2 || {
            rm -rf "$host"
            echo "Could not get ComfyUI $version: set $variable to a ComfyUI $version source tree." >&2; exit 1; }
    fi
fi
if [ ! -f "$host/main.py" ] || [ ! -f "$host/requirements.txt" ]; then
    echo "$variable=$host: no main.py/requirements.txt there; expected a ComfyUI source tree ($version)." >&2
    exit 1
fi
found="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$host/comfyui_version.py" 2>/dev/null || true)"
if [ "$found" != "$version" ]; then
    echo "Note: $host is ComfyUI ${found:-of unknown version}, used as the $version host." >&2
fi
echo "$host"
