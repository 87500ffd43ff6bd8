#!/usr/bin/env bash
# Device call (H100), session 15: the one-token product kernel (gsa.ops.triton.gemv: each program loads its slice
# of W before waiting on the kernel before it, programmatic dependent launch) in the decode step, A/B in one call:
# cuBLAS for every product (PDL on for the recurrent and inductor kernels: the 1.544 ms of the previous call), the
# kernel for o_proj only, and for q|k|v|f, o_proj and gate|up (profile). Then GSA vs Llama at batch 4 after 32K
# (Llama's KV cache ~26 GB; batch 8 ran out of memory), and the GPU tests of the decode path. Outputs in $OUT/gemv.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; R=$OUT/gemv; mkdir -p "$R"
for mode in none o all; do
  case $mode in none) set_="set()";; o) set_="{'o'}";; all) set_="{'qkvf', 'o', 'gate_up'}";; esac
  prof=""; [ $mode = all ] && prof="'--profile',"
  timeout 150 python -c "import gsa.nn.fused as f; f.DECODE_GEMV = $set_
from gsa.bench.decode import main; main(['--models', 'gsa', '--prefixes', '2048', '--batches', '1', $prof
'--out', '$R/decode-$mode.json'])" > "$R/decode-$mode.log" 2>&1
  echo "gemv=$mode rc=$?"; grep -E "^ +gsa " "$R/decode-$mode.log"; grep -A10 "^per-kernel" "$R/decode-$mode.log"
done
timeout $((400 - SECONDS)) python -m pytest -q -p no:cacheprovider tests/ops/test_gemv.py \
  tests/models/test_static_decoder.py tests/models/test_gpu.py > "$R/tests.log" 2>&1
echo "tests rc=$?"; tail -2 "$R/tests.log"
timeout $((590 - SECONDS)) python -m gsa.bench.decode --models gsa,llama --prefixes 32768 --batches 4 \
  --out "$R/decode-b4.json" > "$R/decode-b4.log" 2>&1
echo "batch 4 rc=$?"; grep -E "^ +(gsa|llama) " "$R/decode-b4.log"
