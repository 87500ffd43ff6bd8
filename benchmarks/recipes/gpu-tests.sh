#!/usr/bin/env bash
# Every GPU test (the tests whose names contain "gpu"; CPU runs skip them) in one run, on whatever CUDA GPU is there
# (results page, "GPU tests"). Two of them need two CUDA devices and skip on one; the GGUF test skips without the
# gguf package. ~2-3 minutes on an H100 or H200.
#   bash benchmarks/recipes/gpu-tests.sh
# Writes gpu-tests.log to $OUT (default benchmarks/results/<gpu>/) and prints its summary lines.
source "$(dirname "$0")/common.sh"
PAR=(); $PY -c "import xdist" 2>/dev/null && PAR=(-n 4)  # pytest-xdist, where installed
rc=0
$PY -m pytest -q -p no:cacheprovider "${PAR[@]}" tests -k gpu -rfEsx > "$OUT/gpu-tests.log" 2>&1 || rc=$?
grep -E "passed|failed|FAILED|ERROR" "$OUT/gpu-tests.log" | tail -15
exit $rc
