#!/usr/bin/env bash
# Device call (H100), session 14: the kernels after the tile-first order, the per-kernel launch options of the
# sweep (dx: 8 warps, 1 stage; h: 2 stages) and dg's boundary term fused into kernel_dh (kernel_cross removed),
# against the tree before the session (.carry/old, a755137), side by side; then `gsa bench train` (Llama vs GSA at
# 2K and 16K) and the triton op tests on the GPU. Outputs in $OUT/s14.tar.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; R=$OUT/s14; mkdir -p "$R"
source benchmarks/scripts/ops_ab.sh
ops_ab 1.3b,grouped,small-head "$R" 150
grep -A14 "^per-kernel" "$R/ops-new.log" | head -15
PYTHONPATH=$PWD timeout 150 python -m gsa.bench.train --variants llama,gsa --seq-lens 2048,16384 \
  --out "$R/train.json" > "$R/train.log" 2>&1
echo "train rc=$?"; grep -A6 "^training:" "$R/train.log"
PYTHONPATH=$PWD timeout $((585 - SECONDS)) python -m pytest -q -n 8 tests/ops/test_triton.py -p no:cacheprovider \
  > "$R/gpu-tests.log" 2>&1
echo "tests rc=$?"; tail -2 "$R/gpu-tests.log"
tar cf "$OUT/s14.tar" -C "$OUT" s14
