#!/usr/bin/env bash
# Device call (H100), session 14: the chunk kernels' programs ordered tile-first (utils.program_tiles) against the
# previous order (chunk fastest), side by side in one call. Needs the previous package carried as .carry/old/gsa:
#   (see ops_ab.sh for making it)
#   1. the op benchmark, 1.3b / grouped / small-head, per-kernel profile, new then old;
#   2. Nsight Compute counters of the new kernels (DRAM bytes: did the re-reads move to L2?);
#   3. the triton op tests on the GPU.
# Outputs in $OUT/order.tar.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; R=$OUT/order; mkdir -p "$R"
source benchmarks/scripts/ops_ab.sh
ops_ab 1.3b,grouped,small-head "$R" 150
STATES="" OUT=$OUT PYTHONPATH=$PWD timeout 200 bash benchmarks/scripts/h100_ncu_kernels.sh 2>&1 | tail -20
PYTHONPATH=$PWD timeout $((580 - SECONDS)) python -m pytest -q -n 8 tests/ops/test_triton.py -p no:cacheprovider \
  > "$R/gpu-tests.log" 2>&1
echo "tests rc=$?"; tail -2 "$R/gpu-tests.log"
tar cf "$OUT/order.tar" -C "$OUT" order ncu
