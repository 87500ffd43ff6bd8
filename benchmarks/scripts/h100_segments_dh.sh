#!/usr/bin/env bash
# Device call (H100), prepared in session 14 and not yet run: the reverse state walk in segments
# (chunk_dh.SEGMENT_DH, off by default) against the forward-only split (v7), op benchmark at 1.3b-long and 1.3b in
# one call; `gsa bench train` Llama vs GSA at 16K with it on; the segment tests and gpu-marked op tests on the GPU.
# If kernel_dh falls and the tests pass, make SEGMENT_DH True. Outputs in $OUT/segdh.tar.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; R=$OUT/segdh; mkdir -p "$R"
for on in True False; do
  timeout 150 python -c "import gsa.ops.triton.chunk_dh as c; c.SEGMENT_DH = $on
from gsa.bench.ops import main; main(['--shapes', '1.3b-long,1.3b', '--profile', '--decode-batches', '', '--out', '$R/ops-dh$on.json'])" \
    > "$R/ops-dh$on.log" 2>&1
  echo "SEGMENT_DH=$on rc=$?"; grep -E "^1.3b" "$R/ops-dh$on.log" | grep gsa; grep -A4 "^per-kernel" "$R/ops-dh$on.log"
done
timeout 120 python -c "import gsa.ops.triton.chunk_dh as c; c.SEGMENT_DH = True
from gsa.bench.train import main; main(['--variants', 'llama,gsa', '--seq-lens', '16384', '--out', '$R/train.json'])" \
  > "$R/train.log" 2>&1
echo "train rc=$?"; grep -A4 "^training:" "$R/train.log"
timeout $((585 - SECONDS)) python -m pytest -q -n 8 -p no:cacheprovider tests/ops/test_triton.py -k "gpu or segment" \
  > "$R/gpu-tests.log" 2>&1
echo "tests rc=$?"; tail -2 "$R/gpu-tests.log"
tar cf "$OUT/segdh.tar" -C "$OUT" segdh
