#!/usr/bin/env bash
# The prepared GPU check: the real Wan2.2-TI2V-5B size with random weights on one GPU, at most
# 10 minutes (the script stops starting sections after 540 s and writes what it has after each one).
# Writes benchmarks/results/gpu/gpu_check.json (and prints every section). Needs the project's
# requirements (torch with CUDA, diffusers); flash-attn is measured when installed.
#
#   bash benchmarks/gpu_check.sh               # on the GPU machine
#   bash benchmarks/gpu_check.sh --dry-run     # tiny model on the CPU: checks the script in seconds
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
out="${OUT:-benchmarks/results/gpu/gpu_check.json}"
for arg in "$@"; do
  if [ "$arg" = "--dry-run" ]; then out="${OUT:-${TMPDIR:-/tmp}/gpu_check_dry_run.json}"; fi
done
exec timeout 590 "$python" -m benchmarks.gpu_check --out "$out" "$@"
