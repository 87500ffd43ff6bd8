#!/usr/bin/env bash
# The op on a CPU (results page, "CPU path"): forward and forward+backward of `backend="torch"` (the chunked PyTorch
# path) and of the token loop (`backend="reference"`), float32, B = 1, T = 2048, H = 4, K = V = 128, M = 64, the
# median of REPEATS (default 5) calls after one warm-up. Then `gsa demo` (300 steps of a 1.6M-parameter GSA and its
# held-out perplexity) unless DEMO=0.
#   bash benchmarks/recipes/cpu.sh                        # ~2 minutes on 2 cores, ~1 more for the token loop
#   T=256 DEMO=0 bash benchmarks/recipes/cpu.sh           # a smoke run (seconds)
# Writes cpu-op.json to $OUT (default benchmarks/results/cpu/ on a CPU-only machine).
source "$(dirname "$0")/common.sh"
T=${T:-2048} REPEATS=${REPEATS:-5} $PY - "$OUT/cpu-op.json" <<'PY'
import json, os, statistics, sys, time

import torch
import torch.nn.functional as F

from gsa.bench.common import machine
from gsa.ops import gated_slot_attention

B, T, H, K, M, reps = 1, int(os.environ["T"]), 4, 128, 64, int(os.environ["REPEATS"])
torch.manual_seed(0)
g = F.logsigmoid(torch.randn(B, T, H, M)) / 8
x = dict(q=torch.randn(B, T, H, K), k=torch.randn(B, T, H, K), v=torch.randn(B, T, H, K), s=1 - g.exp(), g=g)


def median_s(fn):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


rows = []
for backend in ("torch", "reference"):
    args = {n: t.clone().requires_grad_(True) for n, t in x.items()}
    with torch.no_grad():
        fwd = median_s(lambda: gated_slot_attention(**args, backend=backend))
    both = median_s(lambda: gated_slot_attention(**args, backend=backend)[0].square().mean().backward())
    rows.append({"backend": backend, "B": B, "T": T, "H": H, "K": K, "V": K, "M": M,
                 "fwd_ms": 1e3 * fwd, "fwd_bwd_ms": 1e3 * both})
    print(f"{backend:9s} forward {1e3 * fwd:9.1f} ms   forward+backward {1e3 * both:9.1f} ms", flush=True)
with open(sys.argv[1], "w") as f:
    json.dump({"machine": machine(torch.device("cpu")), "rows": rows}, f, indent=1)
PY
if [ "${DEMO:-1}" != 0 ]; then $PY -m gsa demo; fi
