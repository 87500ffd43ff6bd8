#!/usr/bin/env bash
# Device call (H100), session 14: `gsa bench train` at T = 2K..16K with the fused Triton RMSNorm and SwiGLU kernels
# (GSA's default on CUDA), GSA without them (gsa-unfused), and Llama plain and with the same kernels (llama-fused),
# side by side; the fused-module tests on the GPU; then the decode benchmark at batch 1 (the decode step compiles
# its norms with inductor, not these kernels: a check that it did not move). Outputs in $OUT/s14d.tar.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; R=$OUT/s14d; mkdir -p "$R"
PYTHONPATH=$PWD timeout 300 python -m gsa.bench.train --variants llama,llama-fused,gsa,gsa-unfused \
  --seq-lens 2048,4096,8192,16384 --out "$R/train.json" > "$R/train.log" 2>&1
echo "train rc=$?"; grep -A18 "^training:" "$R/train.log"
PYTHONPATH=$PWD timeout 120 python -m pytest -q -p no:cacheprovider tests/ops/test_fused_modules.py \
  tests/bench/test_model_benchmarks.py -k "fused or norm or swiglu" > "$R/tests.log" 2>&1
echo "tests rc=$?"; tail -1 "$R/tests.log"
PYTHONPATH=$PWD timeout $((580 - SECONDS)) python -m gsa.bench.decode --prefixes 2048 --batches 1 \
  --out "$R/decode.json" > "$R/decode.log" 2>&1
echo "decode rc=$?"; grep -B2 -A6 "ms/token\|ms per token" "$R/decode.log" | tail -12
tar cf "$OUT/s14d.tar" -C "$OUT" s14d
