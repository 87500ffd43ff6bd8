#!/usr/bin/env bash
# Device call (H100): every GPU test (names with "gpu"; marked or skipped on a CPU), in one run. Output in $OUT/tests.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT/tests"
timeout 580 python -m pytest -q -p no:cacheprovider -n 4 tests -k gpu -rfEsx > "$OUT/tests/gpu-tests.log" 2>&1
echo "tests rc=$?"; grep -E "passed|failed|FAILED|ERROR" "$OUT/tests/gpu-tests.log" | tail -15
