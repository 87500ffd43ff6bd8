"""Wall clock against the host's share, for the op's launch settings: per `gsa bench grid` shape and per variant of
gsa.ops.triton.SETTINGS, in ROUNDS interleaved rounds, the fwd+bwd and fwd medians of triton.testing.do_bench
and the host's enqueue time of one fwd+bwd and of one forward (no_grad, as `gsa bench grid` times it; each the
median of 9, each started on an idle GPU, so the time until the call returns is the host's own work). Where the
host time reaches the GPU time the op is host-bound, and its wall clock moves with the host (docs/log.md,
"Kernels", "The committed defaults timed, and the host's share").

    python benchmarks/host_time.py --shapes 1.3b,h1,1.3b-b1,hd128     # ~90 s on an H100

Variants: the defaults, direct launches off, one stream, both off (`--variants` takes JSON objects of SETTINGS
fields instead).
"""

from __future__ import annotations

import argparse
import time

import torch

from gsa.bench.grid import GRID, _impls, _inputs, settings_variants

VARIANTS = {"default": {}, "no direct": {"direct_launch": False}, "one stream": {"overlap": False},
            "neither": {"direct_launch": False, "overlap": False}}


def host_ms(step, inputs: dict, repeats: int = 9) -> float:
    """Median time for `step()` to return, each call started with the GPU idle (ms)."""
    times = []
    for _ in range(repeats):
        for t in inputs.values():
            t.grad = None
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    torch.cuda.synchronize()
    return sorted(times)[repeats // 2] * 1e3


def measure(name: str, variants: dict, rounds: int) -> dict:
    """{variant: [(fwd+bwd ms, fwd ms, fwd+bwd host ms, fwd host ms) per round]} at shape `name`."""
    from triton.testing import do_bench

    from gsa.ops.triton import SETTINGS

    x = GRID[name]
    a = _inputs(torch, x)
    do = torch.randn(x.B, x.T, x.HQ, x.V, device="cuda", dtype=a["q"].dtype)
    fwd = dict(_impls(torch, x, False))["gsa"]

    def step():
        torch.autograd.backward(fwd(a), do)

    def forward():
        with torch.no_grad():
            fwd(a)

    for v in variants.values():  # compile and warm every variant first
        with SETTINGS.override(**v):
            step()
    torch.cuda.synchronize()
    out = {k: [] for k in variants}
    for _ in range(rounds):
        for k, v in variants.items():
            with SETTINGS.override(**v):
                fb = do_bench(step, grad_to_none=list(a.values()), return_mode="median")
                with torch.no_grad():
                    f = do_bench(lambda: fwd(a), return_mode="median")
                out[k].append((fb, f, host_ms(step, a), host_ms(forward, a)))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="1.3b,h1,1.3b-b1,hd128", help="comma-separated `gsa bench grid` shapes")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variants", nargs="*", help="JSON objects of SETTINGS fields (default: the four above)")
    args = p.parse_args(argv)
    unknown = [s for s in args.shapes.split(",") if s not in GRID]
    if unknown:
        raise SystemExit(f"host_time.py: unknown shape(s) {unknown}; see `gsa bench grid --list`")
    # refused by name before any GPU work: not JSON, or not SETTINGS fields
    variants = VARIANTS if not args.variants else dict(zip(args.variants, settings_variants(args.variants)))
    if not torch.cuda.is_available():
        raise SystemExit("host_time.py: needs a CUDA device")
    for name in args.shapes.split(","):
        for k, r in measure(name, variants, args.rounds).items():
            print(f"{name:10s} {k:11s} fwd+bwd " + " ".join(f"{m[0]:.3f}" for m in r) + "  fwd "
                  + " ".join(f"{m[1]:.3f}" for m in r) + "  host " + " ".join(f"{m[2]:.3f}" for m in r)
                  + "  host fwd " + " ".join(f"{m[3]:.3f}" for m in r), flush=True)
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
