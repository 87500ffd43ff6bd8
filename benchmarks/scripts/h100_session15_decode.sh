#!/usr/bin/env bash
# Device call (H100), session 15: the decode record for issue 6 with this session's step (programmatic dependent
# launch, the one-token GEMV for q|k|v|f, o_proj and gate|up): GSA at batches 1, 4, 32 after 2K, 8K and 32K, then
# Llama (static cache + compile) where it fits, in the same call (one run each, so a time-out keeps the other).
# Outputs in $OUT/decode.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; R=$OUT/decode; mkdir -p "$R"
timeout 260 python -m gsa.bench.decode --models gsa --batches 1,4,32 --prefixes 2048,8192,32768 \
  --out "$R/decode-gsa.json" > "$R/decode-gsa.log" 2>&1
echo "gsa rc=$? at $SECONDS s"; grep -E "^ +gsa " "$R/decode-gsa.log"
timeout $((590 - SECONDS)) python -m gsa.bench.decode --models llama --batches 1,4 --prefixes 2048,8192,32768 \
  --out "$R/decode-llama.json" > "$R/decode-llama.log" 2>&1
echo "llama rc=$? at $SECONDS s"; grep -E "^ +llama " "$R/decode-llama.log"
