#!/usr/bin/env bash
# Device call (H100), session 15: the record for issues 3 and 6 after this session's changes. `gsa bench train` at
# T = 2K..16K (GSA, Llama, and both through our fused norm / SwiGLU kernels), then the op benchmark of this tree
# against the session's starting tree (eb36e53, carried as .carry/old) in the same call (ops_ab.sh). Outputs in
# $OUT/final.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; R=$OUT/final; mkdir -p "$R"
PYTHONPATH=$PWD timeout 320 python -m gsa.bench.train --variants llama,llama-fused,gsa,gsa-unfused \
  --seq-lens 2048,4096,8192,16384 --out "$R/train.json" > "$R/train.log" 2>&1
echo "train rc=$?"; grep -A18 "^training:" "$R/train.log"
source benchmarks/scripts/ops_ab.sh
ops_ab 1.3b,grouped,small-head,1.3b-long "$R" $(( (590 - SECONDS) / 2 ))
