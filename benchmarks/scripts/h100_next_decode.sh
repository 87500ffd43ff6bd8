#!/usr/bin/env bash
# Next device call (H100), prepared 2026-11-24 (session 9) and not yet run, issue 6:
#   1. the 32 x 32K prefill in pieces (StaticDecoder.max_prefill_tokens; it ran out of memory in one piece);
#   2. GSA's step compiled with mode max-autotune-no-cudagraphs (Triton matrix-vector templates timed against
#      cuBLAS, whose products ran at ~2.2 TB/s in session 9's profile), with the per-kernel profile.
# Outputs in $OUT/next-decode.tar.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; R=$OUT/nd; mkdir -p "$R"
# for h100_t2r_long.sh on the same warm machine: carry .carry/t2r.tar.part-aa (and -ab in a second call) with this call
ls .carry/t2r.tar.part-* >/dev/null 2>&1 && mkdir -p /tmp/keep && cp .carry/t2r.tar.part-* /tmp/keep/ && ls -la /tmp/keep
timeout 240 python -m gsa.bench.decode --models gsa --batches 1,32 --prefixes 2048,32768 --profile \
  --out "$R/decode-default.json" > "$R/decode-default.log" 2>&1
echo "default rc=$?"; grep -E "total|^ +gsa" "$R/decode-default.log"
timeout $((580 - SECONDS)) python -m gsa.bench.decode --models gsa --batches 1,32 --prefixes 2048 --profile \
  --compile-mode max-autotune-no-cudagraphs --out "$R/decode-autotune.json" > "$R/decode-autotune.log" 2>&1
echo "autotune rc=$? at $SECONDS s"; grep -E "total|^ +gsa" "$R/decode-autotune.log"
tar cf "$OUT/next-decode.tar" -C "$OUT" nd
