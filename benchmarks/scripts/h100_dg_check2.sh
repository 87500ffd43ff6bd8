#!/usr/bin/env bash
# Device call (H100), session 11: session 11's first check (h100_dg_check.sh) left dg at 5x the torch backend's error
# at T = 2048 in bf16 after the boundary term; gpu_dg_stages.py traced it to chunk_gsa_bwd_kernel_ds alone (its
# 16-bit-input run ~3e-3 off its float32 run on the same values, every input equal). Its chunk-wide dot now runs as
# [BC, BT] (mma.sync) instead of [BT, BC] (wgmma). Here: the stage probe again, the T = 2048 GPU tests in 3 dtypes x
# both chunk-state dtypes, the dg probe, and the 1.3b timing (ds is one of the backward's kernels). Outputs: $OUT/v.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; mkdir -p $OUT/v
timeout 150 python benchmarks/scripts/gpu_dg_stages.py 2048 > $OUT/v/dg-stages.log 2>&1
grep -E "^---|chunk_bwd_ds|reverse_cumsum" $OUT/v/dg-stages.log
timeout 240 python -m pytest -q -m gpu tests/ops/test_triton.py -k "within_2x" 2>&1 | tail -8 | tee $OUT/v/gpu-tests.log
timeout 100 python benchmarks/scripts/gpu_dg_precision.py 2>&1 | tail -5 | tee $OUT/v/dg-precision.log
timeout 150 python -m gsa.bench.ops --shapes 1.3b --out $OUT/v/ops.json > $OUT/v/ops.log 2>&1
grep -E "gsa|SDPA" $OUT/v/ops.log
