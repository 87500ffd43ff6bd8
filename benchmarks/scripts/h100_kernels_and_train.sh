#!/usr/bin/env bash
# One device call (H100): the chunk kernels in three versions side by side (v2 = the tree in .v2/, made with
# `git archive 1785c03 gsa | tar x -C .v2`; v3 with 4 and with 8 warps), then `gsa bench train` with the fastest,
# then the triton tests on the GPU with the time left. Logs and JSON under $OUT.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
ROOT=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
ops() {  # ops <tag> <warps> : the 1.3b shape with a per-kernel profile
  python -c "import sys; sys.argv[0] = 'ops'
import gsa.ops.triton.chunk_a as a, gsa.ops.triton.chunk_ds as d
if hasattr(a, 'NUM_WARPS'): a.NUM_WARPS = d.NUM_WARPS = $2
from gsa.bench.ops import main; main(['--shapes', '1.3b', '--profile', '--decode-batches', '', '--out', '$OUT/ops-$1.json'])" \
    > "$OUT/ops-$1.log" 2>&1
  echo "ops $1 rc=$?"; grep -E "^1.3b|chunk_gsa_(fwd_kernel_a|bwd_kernel_ds)" "$OUT/ops-$1.log"
}
(cd .v2 && PYTHONPATH=$ROOT/.v2 timeout 80 bash -c "$(declare -f ops); OUT=$OUT; ops v2 4")
PYTHONPATH=$ROOT timeout 80 bash -c "$(declare -f ops); OUT=$OUT; ops v3w4 4"
PYTHONPATH=$ROOT timeout 80 bash -c "$(declare -f ops); OUT=$OUT; ops v3w8 8"
BEST=$(python - "$OUT" <<'PY'
import json, sys
best = {}
for tag in ("v2", "v3w4", "v3w8"):
    try:
        rows = json.load(open(f"{sys.argv[1]}/ops-{tag}.json"))["rows"]
        best[tag] = next(r for r in rows if r["impl"].startswith("gsa"))["fwd_bwd_ms"]
    except Exception as e:
        print(f"{tag}: {e!r}", file=sys.stderr)
print(min(best, key=best.get) if best else "v2")
PY
)
echo "fastest: $BEST"
WARPS=4; [ "$BEST" = v3w8 ] && WARPS=8
# v2 fastest: its two kernel files replace v3's in this copy of the tree (utils.py is a superset)
[ "$BEST" = v2 ] && cp .v2/gsa/ops/triton/chunk_a.py .v2/gsa/ops/triton/chunk_ds.py gsa/ops/triton/
t0=$SECONDS
PYTHONPATH=$ROOT timeout $((560 - SECONDS)) python -c "import sys
import gsa.ops.triton.chunk_a as a, gsa.ops.triton.chunk_ds as d
if hasattr(a, 'NUM_WARPS'): a.NUM_WARPS = d.NUM_WARPS = $WARPS
from gsa.bench.train import main
main(['--variants', 'gsa,gsa-keep-states,gsa-M32,gsa-M128,llama', '--out', '$OUT/train.json'])" > "$OUT/train.log" 2>&1
echo "train rc=$? ($((SECONDS - t0)) s, kernels $BEST)"; grep -v "it/s\|s/it" "$OUT/train.log" | tail -28
if [ $((590 - SECONDS)) -gt 60 ]; then
  PYTHONPATH=$ROOT timeout $((590 - SECONDS)) python -m pytest -q -n 8 tests/ops/test_triton.py -p no:cacheprovider > "$OUT/gpu-tests.log" 2>&1
  echo "tests rc=$?"; tail -2 "$OUT/gpu-tests.log"
fi
