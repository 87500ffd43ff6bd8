#!/usr/bin/env bash
# Two device calls on one warm H100 (prepared 2026-11-24, session 9; not yet run), issue 3: the reference library
# side by side in one run. Its first call autotunes for > 290 s, more than a call can spare next to the rest, so:
#   MODE=warm  : carry .whl (fla_core-0.6.0 and einops wheels; `pip download --no-deps fla-core==0.6.0 einops -d
#                .whl`); installs them under /tmp/keep/site and runs fla's chunk_gsa forward+backward at the 1.3b
#                shape with Triton's kernel cache and autotune timings on disk (TRITON_CACHE_AUTOTUNING=1) in
#                /tmp/keep/triton, which stays while the machine is warm.
#   MODE=bench : `gsa bench ops` with fla-core on the 1.3b shape, reading that cache: ours vs SDPA vs fla-core in
#                one run.
# Outputs in $OUT/fla.tar.
set -u
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/keep/triton TRITON_CACHE_AUTOTUNING=1
export PYTHONPATH=$PWD:/tmp/keep/site
OUT=${OUT:-/tmp/out}; R=$OUT/fla; mkdir -p "$R" /tmp/keep/triton
if [ "${MODE:-warm}" = warm ]; then
  python -m pip install -q --no-index --no-deps --target /tmp/keep/site .whl/*.whl > "$R/pip.log" 2>&1
  echo "pip rc=$?"
  timeout 570 python - > "$R/warm.log" 2>&1 <<'PY'
import time, torch
from fla.ops.gsa import chunk_gsa
B, T, HQ, H, K, V, M = 8, 2048, 4, 4, 512, 512, 64
x = lambda *s: torch.randn(*s, device="cuda", dtype=torch.bfloat16, requires_grad=True)
q, k, v = x(B, T, HQ, K), x(B, T, H, K), x(B, T, H, V)
s = x(B, T, H, M)
g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, M, device="cuda")).to(torch.bfloat16).requires_grad_()
t0 = time.time()
o, _ = chunk_gsa(q, k, v, s, g, scale=K**-0.5)
o.sum().backward()
torch.cuda.synchronize()
print(f"fla-core first forward+backward (compile + autotune): {time.time() - t0:.1f} s")
PY
  echo "warm rc=$?"; tail -2 "$R/warm.log"
else
  timeout 580 python -m gsa.bench.ops --shapes 1.3b --fla-shapes 1.3b --decode-batches '' \
    --out "$R/ops-fla.json" > "$R/ops-fla.log" 2>&1
  echo "bench rc=$?"; grep -E "^1.3b|first call" "$R/ops-fla.log"
fi
tar cf "$OUT/fla.tar" -C "$OUT" fla
