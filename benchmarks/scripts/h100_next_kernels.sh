#!/usr/bin/env bash
# Device call (H100) that timed two kernel changes; run 2026-11-24 12:30, results in benchmarks/results/h100/session9/.
#   1. CHUNK_WARPS 4 vs 8 (8 removes most register spills: benchmarks/kernel_resources.py), ops bench 1.3b with profile;
#   2. state_tile (narrow D tiles of the state kernels at B = 1) on vs off: GSA-1.3B training step at T = 16K and 2K;
#   3. the triton tests on the GPU at the faster warp count.
# Outputs in $OUT/next.tar.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; R=$OUT/n; mkdir -p "$R"
for w in 4 8; do
  timeout 90 python -c "import gsa.ops.triton.utils as u; u.CHUNK_WARPS = $w
from gsa.bench.ops import main; main(['--shapes', '1.3b', '--profile', '--decode-batches', '', '--out', '$R/ops-w$w.json'])" \
    > "$R/ops-w$w.log" 2>&1
  echo "warps $w rc=$?"; grep -E "^1.3b" "$R/ops-w$w.log"
done
for mode in on off; do
  timeout 150 python -c "import gsa.ops.triton.utils as u
if '$mode' == 'off': u._sm_count = lambda device: 0
from gsa.bench.train import main; main(['--variants', 'gsa', '--seq-lens', '2048,16384', '--out', '$R/train-tile-$mode.json'])" \
    > "$R/train-tile-$mode.log" 2>&1
  echo "state_tile $mode rc=$?"; grep -E "^ +gsa" "$R/train-tile-$mode.log"
done
timeout $((580 - SECONDS)) python -m pytest -q -n 8 tests/ops/test_triton.py -p no:cacheprovider > "$R/gpu-tests.log" 2>&1
echo "tests rc=$?"; tail -2 "$R/gpu-tests.log"
tar cf "$OUT/next.tar" -C "$OUT" n
