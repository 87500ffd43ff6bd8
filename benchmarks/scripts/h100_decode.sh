#!/usr/bin/env bash
# One device call (H100): the GPU model tests (StaticDecoder compiled + CUDA graph vs generate, forward/decode
# parity, bf16 packed training step), then `gsa bench decode` (issue 6). Everything lands in $OUT/decode.tar.
# Also keeps the carried .carry/t2r.tar.part-*  in /tmp/keep for the next call (the tree's ignored files are not kept).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT/d"
ls .carry/t2r.tar.part-* >/dev/null 2>&1 && mkdir -p /tmp/keep && cp .carry/t2r.tar.part-* /tmp/keep/ && ls -la /tmp/keep
timeout 150 python -m pytest -q -n 4 -m gpu tests/models -p no:cacheprovider > "$OUT/d/gpu-model-tests.log" 2>&1
echo "model tests rc=$?"; tail -3 "$OUT/d/gpu-model-tests.log"
timeout $((585 - SECONDS)) python -m gsa.bench.decode --out "$OUT/d/decode.json" > "$OUT/d/decode.log" 2>&1
echo "decode rc=$? at $SECONDS s"; grep -v "it/s\|s/it" "$OUT/d/decode.log" | tail -18
tar cf "$OUT/decode.tar" -C "$OUT" d && rm -rf "$OUT/d"
