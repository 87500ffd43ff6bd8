"""Session 10 CPU probe (Triton interpreter): dg of the chunk kernels at the GPU test's T = 2048 shape, with the chunk-
boundary term ("new") and with the old whole-sequence sum ("old"), against the torch backend; relative errors vs a
float64 reference. fp16 and fp32 (the interpreter cannot run bf16 dots). ~10 min on 2 cores."""
import os
import sys
import time

os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, "tests")
import torch
import gsa.ops.triton.cumsum as cumsum
from gsa.ops import gated_slot_attention, recurrent_reference
from op_inputs import cast, flatten, make_inputs, rel_err, run
def on(x):
    return {n: None if t is None else t.detach().clone().requires_grad_(True) for n, t in x.items()}
real = cumsum.chunk_gsa_bwd_kernel_dg
class OldSum:
    def __getitem__(self, grid):
        return lambda *a, **kw: real[grid](*a, **{**kw, "USE_CROSS": False})
shape = dict(B=2, T=2048, HQ=4, H=4, K=128, V=128, M=64, tau=4.0)
x = on(make_inputs(**shape))
t0 = time.time()
truth = flatten(run(recurrent_reference, x))


def errors(result):
    return " ".join(f"{n}={rel_err(result[n], truth[n]):.2e}" for n in ("o", "dq", "dk", "ds", "dg"))


for dt in (torch.float16, torch.float32):
    xb = on(cast(x, dt))
    base = flatten(run(lambda *a, **k: gated_slot_attention(*a, backend="torch", **k), xb))
    print(dt, "torch ", errors(base), flush=True)
    for name in ("new", "old"):
        cumsum.chunk_gsa_bwd_kernel_dg = real if name == "new" else OldSum()
        r = flatten(run(lambda *a, **k: gated_slot_attention(*a, backend="triton", **k), xb))
        print(dt, name.ljust(6), errors(r), f"{time.time() - t0:.0f}s", flush=True)
    cumsum.chunk_gsa_bwd_kernel_dg = real
