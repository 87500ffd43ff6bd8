#!/usr/bin/env bash
# Device call (H100), prepared in session 10, not yet run, issue 6: the decode step from raw projections
# (gated_slot_attention_step: swish and the gate inside the two fused recurrent kernels; the four gate kernels and
# the swish kernel of each layer go away). Session 10's default step: 1.829 ms at batch 1 / 2K (profile: gate
# kernels 0.110 ms, swish 0.028 ms, recurrent 0.172 ms, 364 kernels). Predicted: ~1.63 ms (-0.14 ms of kernels,
# -0.06 ms of graph gaps for 120 fewer kernels). gsa-unfused (separate products, plain path) in the same run.
# Also the GPU tests of the step (triton vs torch path) and of the compiled CUDA-graph decoder.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; R=$OUT/d3; mkdir -p "$R"
timeout 200 python -m pytest -q tests/ops/test_step.py tests/models/test_static_decoder.py -m "gpu or not gpu" \
  > "$R/gpu-tests.log" 2>&1; echo "tests rc=$?"; tail -2 "$R/gpu-tests.log"
timeout $((560 - SECONDS)) python -m gsa.bench.decode --models gsa,gsa-unfused,llama --batches 1,32 \
  --prefixes 2048,32768 --profile --out "$R/decode.json" > "$R/decode.log" 2>&1
echo "decode rc=$? at $SECONDS s"; grep -E "total|^ +(gsa|llama)" "$R/decode.log"
tar cf "$OUT/decode3.tar" -C "$OUT" d3
