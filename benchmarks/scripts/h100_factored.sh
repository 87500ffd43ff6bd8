#!/usr/bin/env bash
# Device call (H100), session 13: the diagonal sub-blocks factored into the chunk dots (utils.FACTOR_SPAN = 30,
# default) against the pairwise path (FACTOR_SPAN = -1, the kernels before), side by side in one call:
#   1. the op benchmark, 1.3b / grouped / small-head shapes, with per-kernel profile (1.3b), both paths;
#   2. the MQAR step profile (2-layer d = 128 model, where the pairwise blocks dominated the chunk kernels), both;
#   3. the triton op tests on the GPU (bf16/fp16/fp32, production shapes) with the default.
# Outputs in $OUT/factored.tar.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; R=$OUT/f; mkdir -p "$R"
for span in 30 -1; do
  timeout 120 python -c "import gsa.ops.triton.utils as u; u.FACTOR_SPAN = float($span)
from gsa.bench.ops import main; main(['--shapes', '1.3b,grouped,small-head', '--profile', '--decode-batches', '',
                                     '--out', '$R/ops-span$span.json'])" > "$R/ops-span$span.log" 2>&1
  echo "span $span rc=$?"; grep -E "^(1.3b|grouped|small)" "$R/ops-span$span.log"
done
for span in 30 -1; do
  timeout 100 python -c "import sys, gsa.ops.triton.utils as u; u.FACTOR_SPAN = float($span)
sys.argv = ['x', '--only', '256:64,64:4', '--top', '8']; sys.path.insert(0, 'benchmarks/scripts')
import gpu_mqar_step; gpu_mqar_step.main()" 2>&1 | grep -v -i "usdt\|warn" > "$R/mqar-step-span$span.log"
  echo "mqar span $span"; grep "^|" "$R/mqar-step-span$span.log"
done
timeout $((570 - SECONDS)) python -m pytest -q -n 8 tests/ops/test_triton.py -p no:cacheprovider > "$R/gpu-tests.log" 2>&1
echo "tests rc=$?"; tail -2 "$R/gpu-tests.log"
tar cf "$OUT/factored.tar" -C "$OUT" f
