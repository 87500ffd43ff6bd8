#!/usr/bin/env bash
# Device call (H100), prepared in session 15 and not yet run: the one-token GEMV for down_proj with SwiGLU's
# silu(gate) * up read from the gate|up product in the kernel ("down" in gsa.nn.fused.DECODE_GEMV, opt-in), A/B
# against the default three products in one call (batch 1 after 2K, the second with the per-kernel profile), then
# the decoder's GPU tests (the real-size bf16 test covers the four-product step). Predicted: -0.03 to -0.06 ms a
# token (down_proj's split-K reduce kernel and the SwiGLU kernel go, 2 launches a layer; its first 4096 columns
# requested before the wait). If it gains and the tests pass, add "down" to DECODE_GEMV. Outputs in $OUT/down.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; R=$OUT/down; mkdir -p "$R"
for mode in three four; do
  set_="{'qkvf', 'o', 'gate_up'}"; prof=""
  [ $mode = four ] && set_="{'qkvf', 'o', 'gate_up', 'down'}" && prof="'--profile',"
  timeout 150 python -c "import gsa.nn.fused as f; f.DECODE_GEMV = $set_
from gsa.bench.decode import main; main(['--models', 'gsa', '--prefixes', '2048', '--batches', '1', $prof
'--out', '$R/decode-$mode.json'])" > "$R/decode-$mode.log" 2>&1
  echo "gemv=$mode rc=$?"; grep -E "^ +gsa " "$R/decode-$mode.log"; grep -A10 "^per-kernel" "$R/decode-$mode.log"
done
timeout $((580 - SECONDS)) python -m pytest -q -p no:cacheprovider tests/ops/test_gemv.py \
  tests/models/test_static_decoder.py -k gpu > "$R/tests.log" 2>&1
echo "tests rc=$?"; tail -2 "$R/tests.log"
