#!/usr/bin/env bash
# The GPU path in one command (benchmarks/gpu_check.py says what it measures): on a machine
# with a GPU and the suite installed, `bash benchmarks/gpu_check.sh` prints one table (under
# 8 minutes on one H100/H200); `--dry` runs the same steps at toy sizes on the CPU (CI does).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/gpu_check.py "$@"
