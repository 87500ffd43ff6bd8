#!/usr/bin/env bash
# One device call (H100), issue 6: decoding with fused projections (StaticDecoder's default since 2026-11-24) vs
# the separate q/k/v/f and gate/up products, with the per-kernel time of one captured decode step for each, then
# the side-by-side GSA vs Llama table (`gsa bench decode`). GPU model tests first. Outputs in $OUT/decode.tar.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; R=$OUT/d; mkdir -p "$R"
timeout 120 python -m pytest -q -n 4 -m gpu tests/models -p no:cacheprovider > "$R/gpu-model-tests.log" 2>&1
echo "model tests rc=$?"; tail -2 "$R/gpu-model-tests.log"
timeout 150 python -m gsa.bench.decode --models gsa-unfused --prefixes 2048 --profile --out "$R/decode-unfused.json" \
  > "$R/decode-unfused.log" 2>&1
echo "unfused rc=$?"; grep -E "total|^ +gsa" "$R/decode-unfused.log"
timeout $((590 - SECONDS)) python -m gsa.bench.decode --profile --out "$R/decode.json" > "$R/decode.log" 2>&1
echo "decode rc=$? at $SECONDS s"; grep -v "it/s\|s/it" "$R/decode.log" | grep -E "total|^ +(gsa|llama)"
tar cf "$OUT/decode.tar" -C "$OUT" d
