"""One forward+backward of the op at a `gsa bench grid` shape, for Nsight Compute: two warm calls (compile, then
steady state) outside the profiled range, the third inside `torch.cuda.profiler.start()` / `stop()`, so ncu with
--profile-from-start off sees only that call's kernels. On a lent H100 (Firecracker runtime; ncu must leave the
clocks alone):

    ncu --clock-control none --profile-from-start off -k regex:"chunk_gsa_" \\
        --section SpeedOfLight --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis \\
        --section LaunchStats -o prof python benchmarks/ncu_kernels.py 1.3b
    ncu -i prof.ncu-rep --page details > details.txt

~40 s a shape on an H100 with these sections (docs/log.md, "Kernels", the Nsight Compute table).

`--impl fla` profiles fla-core's `chunk_gsa` instead (installed, and tuned at that shape: run its first call with
`TRITON_CACHE_AUTOTUNING=1` and the same TRITON_CACHE_DIR before, as benchmarks/recipes/kernels.sh does, so that
ncu does not time its autotuning), e.g. its state walks beside ours:
`-k regex:"chunk_fwd_kernel_h|chunk_bwd_kernel_dh"`.
"""

from __future__ import annotations

import argparse

import torch

from gsa.bench.grid import GRID, _impls, _inputs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("shape", choices=sorted(GRID), help="a shape of `gsa bench grid --list`")
    p.add_argument("--impl", choices=["gsa", "fla"], default="gsa", help="ours (default) or fla-core's chunk_gsa")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("ncu_kernels.py: needs a CUDA device")
    if args.impl == "fla":
        try:
            import fla.ops.gsa  # noqa: F401
        except ImportError:
            raise SystemExit("ncu_kernels.py: --impl fla needs fla-core (pip install --no-deps fla-core==0.6.0)")
    x = GRID[args.shape]
    a = _inputs(torch, x)
    f = dict(_impls(torch, x, args.impl == "fla"))[args.impl]
    do = torch.randn(x.B, x.T, x.HQ, x.V, device="cuda", dtype=a["q"].dtype)
    for _ in range(2):
        torch.autograd.backward(f(a), do)
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    torch.autograd.backward(f(a), do)
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()
    print(f"profiled one fwd+bwd of {args.impl} at {args.shape} ({x.label()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
