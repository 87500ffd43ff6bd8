"""Per-kernel launch options of the chunked GSA kernels, side by side (GPU only; issue 3).

For each option set (num_warps, num_stages, and the D tile of kernel_o / kernel_dx) applied to every kernel at
once through `gsa.ops.triton.utils.KERNEL_OPTIONS`, one forward+backward is profiled per shape and each kernel's
time recorded; the kernels are independent in time, so the best set per kernel can be read off one table. Prints
the table (us a forward+backward, per kernel) and the best set per kernel, and writes JSON:

    python benchmarks/scripts/gpu_kernel_sweep.py --shapes 1.3b,grouped,small-head --out sweep.json

Reads shapes from gsa.bench.ops.SHAPES. A set that fails to compile or launch is recorded as failed, not fatal.
"""

from __future__ import annotations

import argparse
import json
import re
import time

KERNELS = ["cumsum", "h", "h-narrow", "h-carry", "a", "a-small", "dp-small", "p", "o", "dp", "dh", "dh-narrow",
           "dh-carry", "dx", "ds", "dg"]
# (label, options for every kernel); "BD" only reaches kernel_o and kernel_dx
SETS = [("w4s3", dict(num_warps=4, num_stages=3)), ("w4s1", dict(num_warps=4, num_stages=1)),
        ("w4s2", dict(num_warps=4, num_stages=2)), ("w4s4", dict(num_warps=4, num_stages=4)),
        ("w8s1", dict(num_warps=8, num_stages=1)), ("w8s2", dict(num_warps=8, num_stages=2)),
        ("w8s3", dict(num_warps=8, num_stages=3)), ("w2s2", dict(num_warps=2, num_stages=2)),
        ("w4s3-bd32", dict(num_warps=4, num_stages=3, BD=32)), ("w4s3-bd128", dict(num_warps=4, num_stages=3, BD=128)),
        ("w8s2-bd128", dict(num_warps=8, num_stages=2, BD=128))]


def kernel_times(rows: list[dict]) -> dict[str, float]:
    """us a forward+backward per kernel short name (kernel_a's two specialisations told apart by call order is not
    possible from a profile: 'a' holds both the forward and the backward dp calls)."""
    out: dict[str, float] = {}
    for r in rows:
        m = re.match(r"chunk_gsa_(?:fwd|bwd)_kernel_(\w+)", r["kernel"])
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + r["us"]
    return out


def main(argv=None) -> int:
    import torch

    from gsa.bench import ops
    from gsa.ops.triton import utils

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="1.3b,grouped,small-head")
    p.add_argument("--sets", default=",".join(s for s, _ in SETS))
    p.add_argument("--out", default="kernel-sweep.json")
    p.add_argument("--budget-s", type=float, default=400.0, help="stop starting new sets after this many seconds")
    args = p.parse_args(argv)
    sets = [(n, o) for n, o in SETS if n in args.sets.split(",")]
    t0, chosen = time.time(), utils.KERNEL_OPTIONS
    result: dict = {"gpu": torch.cuda.get_device_name(), "sets": dict(sets), "times": {}}
    for shape in args.shapes.split(","):
        result["times"][shape] = {}
        for name, opts in sets:
            if time.time() - t0 > args.budget_s:
                print(f"budget spent: {shape} {name} not run")
                continue
            base = {k: v for k, v in opts.items() if k != "BD"}
            utils.KERNEL_OPTIONS = {k: (opts if k in ("o", "dx") else base) for k in KERNELS}
            try:
                rows = ops._profile(torch, ops.SHAPES[shape], torch.bfloat16)
                result["times"][shape][name] = kernel_times(rows)
            except Exception as e:  # a set may not fit (shared memory, registers): record it
                result["times"][shape][name] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
            torch.cuda.empty_cache()
            with open(args.out, "w") as f:
                json.dump(result, f, indent=1)
    utils.KERNEL_OPTIONS = chosen
    for shape, by_set in result["times"].items():
        names = [n for n in by_set if "error" not in by_set[n]]
        if not names:
            continue
        kernels = sorted(by_set[names[0]], key=lambda k: -by_set[names[0]][k])
        print(f"\n{shape}: us a forward+backward per kernel")
        print("| kernel | " + " | ".join(names) + " | best |")
        print("| --- " * (len(names) + 2) + "|")
        for k in kernels + ["total"]:
            vals = {n: (sum(by_set[n].values()) if k == "total" else by_set[n].get(k, float("nan"))) for n in names}
            best = min(vals, key=vals.get)
            print(f"| {k} | " + " | ".join(f"{vals[n]:.1f}" for n in names) + f" | {best} |")
        for n in by_set:
            if "error" in by_set[n]:
                print(f"{n}: {by_set[n]['error']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
