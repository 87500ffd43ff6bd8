"""Session 10 probe: at T = 2048 in bf16 the chunk kernels' dg is ~20x less accurate than the torch backend's
(GPU test test_gpu_within_2x_of_the_torch_backend, shape 3). Relative error of every output and gradient vs a
float64 reference, for the torch backend and for the triton backend with its default dot precision for bf16
(tf32 for float32 intermediates) and with tf32x3 / ieee, to tell whether the dots' precision is the cause."""
import sys

import torch

sys.path.insert(0, "tests")
import gsa.ops.triton.chunk as chunk  # noqa: E402
from gsa.ops import gated_slot_attention, recurrent_reference  # noqa: E402
from op_inputs import cast, flatten, make_inputs, rel_err, run  # noqa: E402


def on(x, device):
    return {n: None if t is None else t.detach().to(device).requires_grad_(True) for n, t in x.items()}


x = on(make_inputs(B=2, T=2048, HQ=4, H=4, K=128, V=128, M=64, tau=4.0), "cuda")
truth = flatten(run(recurrent_reference, x))
xb = on(cast(x, torch.bfloat16), "cuda")
rows = {"torch": flatten(run(lambda *a, **k: gated_slot_attention(*a, backend="torch", **k), xb))}
real = chunk.dot_precision
for prec in ("default", "tf32x3", "ieee"):
    chunk.dot_precision = real if prec == "default" else (lambda dtype, p=prec: p)
    rows[f"triton {prec}"] = flatten(run(lambda *a, **k: gated_slot_attention(*a, backend="triton", **k), xb))
chunk.dot_precision = real
names = list(truth)
print("impl".ljust(16) + "".join(n.rjust(10) for n in names))
for impl, r in rows.items():
    print(impl.ljust(16) + "".join(f"{rel_err(r[n], truth[n]):10.2e}" for n in names))
