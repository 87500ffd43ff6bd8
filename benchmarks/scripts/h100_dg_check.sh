#!/usr/bin/env bash
# Device call (H100), session 10: after the exact chunk-boundary term in dg (gsa/ops/triton/cumsum.py), the GPU
# tests at T = 2048 (bf16/fp16/fp32, both CHUNK_STATES), the dg precision probe, and the 1.3b timing (the boundary
# term adds one small kernel to the backward). Outputs under $OUT/v.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; mkdir -p $OUT/v
timeout 240 python -m pytest -q -m gpu tests/ops/test_triton.py -k "within_2x and shape2" 2>&1 | tail -4 | tee $OUT/v/gpu-tests.log
timeout 100 python benchmarks/scripts/gpu_dg_precision.py 2>&1 | tail -5 | tee $OUT/v/dg-precision.log
timeout 150 python -m gsa.bench.ops --shapes 1.3b --out $OUT/v/ops.json > $OUT/v/ops.log 2>&1
grep -E "gsa|SDPA" $OUT/v/ops.log
