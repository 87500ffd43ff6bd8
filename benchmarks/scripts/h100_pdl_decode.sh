#!/usr/bin/env bash
# Device call (H100), session 15: programmatic dependent launch (PDL) in the decode step. Our two fused recurrent
# kernels launch with PDL (kernel_v loads its state while kernel_k runs) and inductor's norm / element-wise kernels
# with `triton.enable_pdl` (gsa.ops.triton.utils.PDL switches both). A/B at batch 1 after 2K, with the per-kernel
# profile of the PDL run; then GSA vs Llama at batch 8 after 32K (both fit: Llama's KV cache is ~52 GB there); the
# decoder's GPU tests. Outputs in $OUT/pdl.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; R=$OUT/pdl; mkdir -p "$R"
for on in True False; do
  prof=""; [ $on = True ] && prof="'--profile',"
  timeout 150 python -c "import gsa.ops.triton.utils as u; u.PDL = $on
from gsa.bench.decode import main; main(['--models', 'gsa', '--prefixes', '2048', '--batches', '1', $prof
'--out', '$R/decode-pdl$on.json'])" > "$R/decode-pdl$on.log" 2>&1
  echo "PDL=$on rc=$?"; grep -E "^ +gsa " "$R/decode-pdl$on.log"; grep -A12 "^per-kernel" "$R/decode-pdl$on.log"
done
timeout 200 python -m gsa.bench.decode --models gsa,llama --prefixes 32768 --batches 8 --out "$R/decode-b8.json" \
  > "$R/decode-b8.log" 2>&1
echo "batch 8 rc=$?"; grep -E "^ +(gsa|llama) " "$R/decode-b8.log"
timeout $((590 - SECONDS)) python -m pytest -q -p no:cacheprovider tests/models/test_static_decoder.py \
  tests/ops/test_triton.py -k "gpu or decode or recurrent or step" > "$R/tests.log" 2>&1
echo "tests rc=$?"; tail -2 "$R/tests.log"
