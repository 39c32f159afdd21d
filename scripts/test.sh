#!/usr/bin/env bash
# Install everything the test suite needs, then run it on every tested ComfyUI host (CPU only).
#
#   bash scripts/test.sh [PYTEST ARGS...]
#
# The hosts are the rows of .ci/comfyui_hosts (ComfyUI 0.3.64, then 0.33.0); .ci/comfyui_host.sh says where
# each comes from (its variable, else shared/comfyui/ComfyUI-<version> inside or beside the checkout, else
# a fetch from github). Each host has its own Python environment, because their requirements differ:
#   1. the first (primary) host: the current environment gets the pinned torch/torchvision pair, the
#      host's run-time needs (.ci/comfyui_env.sh) and this project; the whole suite runs, COMFYUI_PATH set;
#   2. every other host: .venv-comfyui-<version> (built by .ci/comfyui_venv.sh, reused while unchanged);
#      the tests that need a host run there (tests/comfyui and those marked comfyui_host: tests/conftest.py
#      picks them when WORLDWANDER_HOST_TESTS_ONLY=1), COMFYUI_PATH pointing at that host.
# The same PYTEST ARGS go to every run (a path or -k selects in each; a run whose arguments select no host
# test is reported and passes, except under CI=true or without arguments). The exit status is the first
# failing run's (0 when all pass).
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t hosts < <(awk '!/^#/ && NF {print $1}' .ci/comfyui_hosts)
clock() { date +%s; }
began="$(clock)"

python -m pip install --quiet --upgrade pip
primary_host="$(PYTHON=python bash .ci/comfyui_env.sh "${hosts[0]}" | tail -n 1)"
python -m pip install --quiet -c <(printf 'torch==2.15.0\ntorchvision==0.29.2\n') -e ".[test]"
other_paths=()
for version in "${hosts[@]:1}"; do
    other_path="$(bash .ci/comfyui_venv.sh "$version" ".venv-comfyui-$version" | tail -n 1)"  # exits on failure
    other_paths+=("$other_path")
done
summary=("set-up of ${#hosts[@]} environments: $(( $(clock) - began )) s")

status=0
run_pytest() {  # run_pytest LABEL PYTHON COMFYUI_PATH [ENV=VALUE...] -- PYTEST ARGS...
    local label="$1" python="$2" host="$3" started code=0
    shift 3
    local settings=()
    while [ "$1" != "--" ]; do settings+=("$1"); shift; done
    shift
    echo "== ComfyUI $label: COMFYUI_PATH=$host"
    started="$(clock)"
    env COMFYUI_PATH="$host" "${settings[@]}" "$python" -m pytest "$@" || code=$?
    if [ "$code" -eq 5 ] && [ $# -gt 0 ] && [ "${CI:-}" != "true" ] && [ ${#settings[@]} -gt 0 ]; then
        echo "(no test that needs a host among the arguments: nothing to run on ComfyUI $label)"
        code=0
    fi
    summary+=("ComfyUI $label: exit $code, $(( $(clock) - started )) s")
    if [ "$status" -eq 0 ]; then status="$code"; fi
}

run_pytest "${hosts[0]} (the whole suite)" python "$primary_host" -- "$@"
for index in "${!other_paths[@]}"; do
    version="${hosts[index + 1]}"
    run_pytest "$version (the tests that need a host)" ".venv-comfyui-$version/bin/python" "${other_paths[index]}" \
        WORLDWANDER_HOST_TESTS_ONLY=1 -- "$@"
done

echo "== scripts/test.sh summary"
printf '  %s\n' "${summary[@]}"
exit "$status"
