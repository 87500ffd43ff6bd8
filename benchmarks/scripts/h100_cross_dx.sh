#!/usr/bin/env bash
# Device call (H100), session 14: dg's boundary term taken in kernel_dx (per D tile, summed by torch) instead of
# kernel_dh (which cost +159 us there, session 14's h100_fused_cross.sh) or its own kernel (179 us), against the
# tree before the session (.carry/old, a755137), side by side, at the three op shapes and 1.3b-long (B 1, T 16K,
# where GSA's training step slowed in the previous call); a launch-option sweep at 1.3b-long; `gsa bench train`;
# the GPU-marked op tests. Outputs in $OUT/s14b.tar.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; R=$OUT/s14b; mkdir -p "$R"
source benchmarks/scripts/ops_ab.sh
ops_ab 1.3b,grouped,small-head,1.3b-long "$R" 170
grep -A13 "^per-kernel" "$R/ops-new.log" | head -14
PYTHONPATH=$PWD timeout 150 python benchmarks/scripts/gpu_kernel_sweep.py --shapes 1.3b-long \
  --sets w4s3,w4s1,w4s2,w8s1,w8s2 --out "$R/sweep-long.json" > "$R/sweep-long.log" 2>&1
echo "sweep rc=$?"; sed -n '/^1.3b-long: us/,$p' "$R/sweep-long.log"
PYTHONPATH=$PWD timeout 150 python -m gsa.bench.train --variants llama,gsa --seq-lens 2048,16384 \
  --out "$R/train.json" > "$R/train.log" 2>&1
echo "train rc=$?"; grep -A6 "^training:" "$R/train.log"
PYTHONPATH=$PWD timeout $((585 - SECONDS)) python -m pytest -q -n 8 tests/ops/test_triton.py -k gpu \
  -p no:cacheprovider > "$R/gpu-tests.log" 2>&1
echo "tests rc=$?"; tail -2 "$R/gpu-tests.log"
tar cf "$OUT/s14b.tar" -C "$OUT" s14b
