#!/usr/bin/env bash
# Device call (H100), session 11, issue 6: the fused recurrent kernels' K/V tiles narrowed to fill the GPU (state_tile:
# at B = 1 and the 1.3B heads 32 -> 128 programs a kernel). A/B in one call, batch 1, prefix 2K, per-kernel profile:
# "narrow" (the change) and "wide" (64-wide tiles, as before). Predicted: the two recurrent kernels 163 -> ~110 us a
# step, -0.04 to -0.05 ms a token. Outcome (session 12): narrow 1.642 ms vs wide 1.667 (kept). A third mode timed
# a Triton GEMV for o_proj/down_proj (gsa.ops.triton.gemv, since removed): 3.089 ms, its 48 products 1.82 ms against
# cuBLAS's ~0.44 ms (benchmarks/results/h100/session12/decode-tiles/).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; R=$OUT/dt; mkdir -p "$R"
for mode in narrow wide; do
  timeout 110 python -c "
import runpy, sys
import gsa.ops.triton.fused_recurrent as fr
if '$mode' == 'wide':
    fr.state_tile = lambda D, n, device: fr.block(D, 64)
sys.argv = ['gsa.bench.decode', '--models', 'gsa', '--batches', '1', '--prefixes', '2048', '--profile',
            '--out', '$R/decode-$mode.json']
runpy.run_module('gsa.bench.decode', run_name='__main__')" > "$R/decode-$mode.log" 2>&1
  echo "$mode rc=$?"; grep -E "fused_recurrent|total|^ +gsa" "$R/decode-$mode.log"
done
