"""Shared helpers for op tests: random GSA inputs, one-call forward+backward, error metrics.

Every backend's test file uses these, so all backends are held to the same checks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LEAVES = ("q", "k", "v", "s", "g", "hk0", "hv0")


def make_inputs(B=2, T=33, HQ=4, H=2, K=20, V=12, M=7, *, dtype=torch.float64, tau=8.0, abc=False,
                init_state=True, N=None, device="cpu"):
    """Random op inputs as a dict of leaf tensors (requires_grad), layer-like gates.

    g = logsigmoid(f) / tau (small tau: strong gates), s = 1 - exp(g) as an independent leaf; abc=True gives
    slot logits in s and g=None. States are float32 (float64 with float64 inputs), N rows (default B).
    """
    N = B if N is None else N
    sd = torch.float64 if dtype == torch.float64 else torch.float32
    f = torch.randn(B, T, H, M, dtype=torch.float64) * 2
    g = F.logsigmoid(f) / tau
    x = {
        "q": torch.randn(B, T, HQ, K, dtype=torch.float64),
        "k": torch.randn(B, T, H, K, dtype=torch.float64),
        "v": torch.randn(B, T, H, V, dtype=torch.float64),
        "s": torch.randn(B, T, H, M, dtype=torch.float64) if abc else 1 - g.exp(),
        "g": None if abc else g,
        "hk0": torch.randn(N, H, K, M, dtype=torch.float64) * 0.5 if init_state else None,
        "hv0": torch.randn(N, H, M, V, dtype=torch.float64) * 0.5 if init_state else None,
    }
    out = {}
    for name, t in x.items():
        if t is None:
            out[name] = None
            continue
        want = sd if name in ("hk0", "hv0") else dtype
        out[name] = t.to(device=device, dtype=want).requires_grad_(True)
    return out


def cast(inputs, dtype):
    """The same inputs as fresh leaves in another dtype (states follow the op's rule: float64 or float32)."""
    sd = torch.float64 if dtype == torch.float64 else torch.float32
    out = {}
    for name, t in inputs.items():
        out[name] = None if t is None else t.detach().to(sd if name in ("hk0", "hv0") else dtype).requires_grad_(True)
    return out


def run(fn, inputs, *, cotangents=None, seed=1, **kw):
    """Forward and backward in one go.

    Returns (o, (hk, hv), grads) where grads maps each leaf name to its gradient, for the loss
    sum(o * do) + sum(hk * dhk) + sum(hv * dhv) with fixed random cotangents (so final-state gradients
    flow back too).
    """
    init = (inputs["hk0"], inputs["hv0"]) if inputs["hk0"] is not None else None
    o, (hk, hv) = fn(inputs["q"], inputs["k"], inputs["v"], inputs["s"], inputs["g"], initial_state=init,
                     output_final_state=True, **kw)
    gen = torch.Generator().manual_seed(seed)
    do = torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o)
    dhk = torch.randn(hk.shape, generator=gen, dtype=torch.float64).to(hk)
    dhv = torch.randn(hv.shape, generator=gen, dtype=torch.float64).to(hv)
    loss = (o * do).sum() + (hk * dhk).sum() + (hv * dhv).sum()
    names = [n for n in LEAVES if inputs[n] is not None]
    grads = torch.autograd.grad(loss, [inputs[n] for n in names])
    return o.detach(), (hk.detach(), hv.detach()), dict(zip(names, grads))


def on(inputs, device=None):
    """The same inputs as fresh leaves on `device` (default: CUDA where there is one, else the CPU, where the
    Triton kernels run under the interpreter); None stays None."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return {n: None if t is None else t.detach().to(device).requires_grad_(True) for n, t in inputs.items()}


def decay_spans(g, rows):
    """[B, T // rows, H]: the decay span of each full block of `rows` steps of gates g [B, T, H, M] (a partial last
    block left out): max over slots of Gl_first - Gl_last, the block's gates after its first row summed and negated,
    as the kernels measure a chunk's or a sub-block's span (tiles.py), in float64."""
    n = g.shape[1] // rows
    blocks = g[:, : n * rows].double().reshape(g.shape[0], n, rows, *g.shape[2:])
    return blocks[:, :, 1:].sum(2).neg().amax(-1)


def cpu(result):
    """run(...)'s (o, states, grads) moved to the CPU, to compare with a CPU reference."""
    o, (hk, hv), grads = result
    return o.cpu(), (hk.cpu(), hv.cpu()), {n: t.cpu() for n, t in grads.items()}


def rel_err(x, ref):
    """Relative RMS error ||x - ref|| / ||ref|| in float64.

    A reference whose RMS is under 1e-3 (an exactly-zero gradient, such as ds of ABC at T = 1) is measured
    against RMS 1e-3 instead, so rounding noise around zero is not reported as a 100% error.
    """
    x, ref = x.double(), ref.double()
    floor = 1e-3 * ref.numel() ** 0.5
    return ((x - ref).norm() / ref.norm().clamp_min(floor)).item()


def flatten(result):
    """(o, states, grads) -> {name: tensor} for uniform comparison."""
    o, (hk, hv), grads = result
    return {"o": o, "hk": hk, "hv": hv, **{f"d{n}": t for n, t in grads.items()}}


def assert_matches(result, ref, tol):
    """Every output, state and gradient within relative RMS error `tol` of the reference."""
    a, b = flatten(result), flatten(ref)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.isfinite(a[name]).all(), f"{name} has non-finite values"
        err = rel_err(a[name], b[name])
        assert err <= tol, f"{name}: relative error {err:.3e} > {tol:.1e}"


def assert_ratio(result, baseline, truth, ratio=2.0, floor=1e-6):
    """`result` may be at most `ratio` times as wrong as `baseline` (same dtype, plain PyTorch) vs `truth`."""
    a, b, t = flatten(result), flatten(baseline), flatten(truth)
    for name in t:
        err, base = rel_err(a[name], t[name]), rel_err(b[name], t[name])
        assert torch.isfinite(a[name]).all(), f"{name} has non-finite values"
        assert err <= ratio * base + floor, f"{name}: error {err:.3e} vs baseline {base:.3e} (ratio {ratio})"
