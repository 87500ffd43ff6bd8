#!/usr/bin/env bash
# Training throughput and peak memory, GSA-1.3B vs Llama-1.3B (results page, "Training"): `gsa bench train` at
# T = 2K, 4K, 8K, 16K with 16K tokens a step, for GSA, Llama (transformers, SDPA), GSA with PyTorch's element-wise
# norms and SwiGLU (gsa-unfused) and Llama with ours (llama-fused). ~5 minutes on an H100.
#   bash benchmarks/recipes/train.sh
#   bash benchmarks/recipes/train.sh --variants gsa,gsa-M32,gsa-M128,gsa-keep-states   # other variants
#   bash benchmarks/recipes/train.sh --size tiny --variants gsa,llama --seq-lens 32,64 --tokens 64 --steps 1 --warmup 0
#                                                                                       # a smoke run (CPU, seconds)
# Writes train.json and train.png to $OUT (default benchmarks/results/<gpu>/). Extra arguments go to
# `gsa bench train` and override the defaults above (python -m gsa.bench.train --help).
source "$(dirname "$0")/common.sh"
$PY -m gsa.bench.train --variants llama,llama-fused,gsa,gsa-unfused --seq-lens 2048,4096,8192,16384 \
  --out "$OUT/train.json" "$@"
