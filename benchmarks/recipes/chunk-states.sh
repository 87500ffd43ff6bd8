#!/usr/bin/env bash
# 16-bit chunk states where no final state reaches the backward (SETTINGS.chunk_states = "auto"), kept states
# (SETTINGS.keep_states) and 16-bit state gradients likewise (SETTINGS.state_grads = "auto"), checked and timed in
# one GPU call before any becomes a default (docs/log.md, "Kernels", "16-bit chunk states where no final state
# reaches the backward, kept states; host time" and "16-bit state gradients"):
#  1. the op's GPU tests under all three (`--kernel-settings`, tests/conftest.py); the default run's GPU tests include
#     the "auto" cases of test_gpu_within_2x_of_the_torch_backend and the state_grads cases already;
#  2. `gsa bench grid` at SHAPES: the defaults, kernel_dx in 32-row blocks (launch option "RB"), "auto", "auto" +
#     kept states, and those + 16-bit state gradients side by side (--profile: GPU time and each kernel's);
#  3. where .cache/ab-base is carried (`bash benchmarks/recipes/ab.sh pack BASE` here), the host-bound shapes
#     against BASE (ab.sh run --shapes h1,1.3b-b1).
#   bash benchmarks/recipes/chunk-states.sh       # ~6-9 minutes on an H100, most of it compiling the variants
#   STEPS=tests bash benchmarks/recipes/chunk-states.sh; STEPS=grid,ab bash ...   # the same in two device calls
# Writes gpu-tests-auto-keep.log, grid-auto-keep.log and grid-auto-keep/ (and ab.md with a base) to $OUT.
source "$(dirname "$0")/common.sh"
SHAPES=${SHAPES:-1.3b,hd128,hd64,h1,gqa16-4}
KEEP='{"chunk_states": "auto", "keep_states": true}'
VARIANT='{"chunk_states": "auto", "keep_states": true, "state_grads": "auto"}'
PAR=(); $PY -c "import xdist" 2>/dev/null && PAR=(-n 4)
STEPS=${STEPS:-tests,grid,ab}
step() { [[ ",$STEPS," == *",$1,"* ]]; }
rc=0
step tests && { $PY -m pytest -q -p no:cacheprovider "${PAR[@]}" tests/ops -k gpu -rfEx \
  --kernel-settings "$VARIANT" > "$OUT/gpu-tests-auto-keep.log" 2>&1 || rc=$?
  grep -E "passed|failed|FAILED|ERROR" "$OUT/gpu-tests-auto-keep.log" | tail -8; }
step grid && { $PY -m gsa bench grid --shapes "$SHAPES" --fla never --no-sdpa --profile \
  --launch '{"dx": {"num_warps": 8, "num_stages": 1, "ND": 0, "RB": 32}}' --settings '{"chunk_states": "auto"}' \
  --settings "$KEEP" --settings "$VARIANT" --out "$OUT/grid-auto-keep" > "$OUT/grid-auto-keep.log" 2>&1 || rc=$?
  tail -40 "$OUT/grid-auto-keep.log"; }
if step ab && [ -d .cache/ab-base/gsa ]; then
  OUT=$OUT bash benchmarks/recipes/ab.sh run --shapes h1,1.3b-b1 || rc=$?
fi
exit $rc
