#!/usr/bin/env bash
# Device call (H100), session 14: (1) the tile-first program order (commit 0787a2b) against the order before it,
# side by side (the previous package carried as .carry/old/gsa, see h100_tile_order.sh); (2) the per-kernel launch
# options sweep (gpu_kernel_sweep.py) over the three op shapes. Outputs in $OUT/sweep.tar.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; R=$OUT/sweep; mkdir -p "$R"
source benchmarks/scripts/ops_ab.sh
ops_ab 1.3b,grouped,small-head "$R" 150
PYTHONPATH=$PWD timeout $((590 - SECONDS)) python benchmarks/scripts/gpu_kernel_sweep.py --out "$R/sweep.json" \
  --budget-s $((480 - SECONDS)) > "$R/sweep.log" 2>&1
echo "sweep rc=$?"; sed -n '/^1.3b: us/,$p' "$R/sweep.log" | grep -v "^  \|^per-kernel"
tar cf "$OUT/sweep.tar" -C "$OUT" sweep
