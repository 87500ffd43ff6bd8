#!/usr/bin/env bash
# Device call (H100), session 14: the forward state walk split into segments at few long sequences
# (chunk_h.STATE_SEGMENTS: auto vs 1 = off), op benchmark at 1.3b-long and 1.3b in one call; `gsa bench train`
# Llama vs GSA at 2K and 16K; the GPU tests of the op (gpu-marked and the segment tests). Outputs in $OUT/s14f.tar.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; R=$OUT/s14f; mkdir -p "$R"
for seg in auto 1; do
  timeout 150 python -c "import gsa.ops.triton.chunk_h as c; c.STATE_SEGMENTS = None if '$seg' == 'auto' else int('$seg')
from gsa.bench.ops import main; main(['--shapes', '1.3b-long,1.3b', '--profile', '--decode-batches', '', '--out', '$R/ops-seg$seg.json'])" \
    > "$R/ops-seg$seg.log" 2>&1
  echo "segments $seg rc=$?"; grep -E "^1.3b" "$R/ops-seg$seg.log" | grep gsa; grep -A4 "^per-kernel" "$R/ops-seg$seg.log"
done
timeout 150 python -m gsa.bench.train --variants llama,gsa --seq-lens 2048,16384 --out "$R/train.json" > "$R/train.log" 2>&1
echo "train rc=$?"; grep -A6 "^training:" "$R/train.log"
timeout $((585 - SECONDS)) python -m pytest -q -n 8 -p no:cacheprovider tests/ops/test_triton.py -k "gpu or segment" \
  > "$R/gpu-tests.log" 2>&1
echo "tests rc=$?"; tail -2 "$R/gpu-tests.log"
tar cf "$OUT/s14f.tar" -C "$OUT" s14f
