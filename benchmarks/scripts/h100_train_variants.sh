#!/usr/bin/env bash
# Device call (H100), session 14: the rest of `gsa bench train`'s variants with the session's kernels (keep-states,
# 32 / 128 slots) at 2K and 16K beside Llama, and the per-kernel profile of the op at 1.3b-long (B 1, T 16K).
# Outputs in $OUT/s14e.tar.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; R=$OUT/s14e; mkdir -p "$R"
PYTHONPATH=$PWD timeout 240 python -m gsa.bench.train --variants llama,gsa,gsa-keep-states,gsa-M32,gsa-M128 \
  --seq-lens 2048,16384 --out "$R/train.json" > "$R/train.log" 2>&1
echo "train rc=$?"; grep -A12 "^training:" "$R/train.log"
PYTHONPATH=$PWD timeout 120 python -m gsa.bench.ops --shapes 1.3b-long --profile --decode-batches '' \
  --out "$R/ops-long.json" > "$R/ops-long.log" 2>&1
echo "ops rc=$?"; grep -A14 "^per-kernel" "$R/ops-long.log"; grep "^1.3b-long" "$R/ops-long.log"
tar cf "$OUT/s14e.tar" -C "$OUT" s14e
