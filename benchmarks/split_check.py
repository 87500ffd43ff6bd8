"""The walks' launch option "SPLIT" against the default walk on one device, per walk and pipeline depth: the largest
difference of the op's output and of each gradient. On the H100 SPLIT gave wrong outputs in bf16 and fp16 while the
Triton interpreter gives the default's bitwise (gsa/ops/triton/settings.py; docs/log.md, "Kernels"); this narrows
down which walk and which compiled form goes wrong.

    python benchmarks/split_check.py        # on a GPU: bf16, fp16, fp32 at two shapes (SPLIT's refusal lifted here)
    TRITON_INTERPRET=1 python benchmarks/split_check.py --dtype fp16 --device cpu    # the interpreter: all 0

Each row: the walk(s) given SPLIT, their num_stages (None: the entry's own), max |SPLIT - default| of o and of each
gradient. The default shapes: whole D and slot tiles (EVEN) with a 2-token last chunk, and a partial D tile with
grouped heads and a partial last chunk.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# (walk entries given SPLIT, num_stages for them or None for the entry's own). A walk takes "h" / "dh" at D tiles
# over 16 or in segments, else "h-narrow" / "dh-narrow" (chunk_h.walk_plan): on a GPU small shapes take the narrow
# entries, under the interpreter (no SMs to fill) the wide ones; each shape's line says which ones its walks took.
WALKS = ("h", "h-narrow", "dh", "dh-narrow")
CASES = [(("h",), None), (("h",), 1), (("h-narrow",), None), (("h-narrow",), 1), (("dh",), None), (("dh",), 1),
         (("dh-narrow",), None), (("dh-narrow",), 1), (WALKS, None)]


def split_launch(launch: dict, names: tuple, stages: int | None) -> dict:
    """`launch` with SPLIT on for the entries `names` (their other options kept), at `stages` pipeline stages."""
    out = dict(launch)
    for name in names:
        out[name] = {**launch.get(name, {}), "SPLIT": True, **({} if stages is None else {"num_stages": stages})}
    return out


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", default="bf16,fp16,fp32", help=f"comma-separated, of {', '.join(DTYPES)}")
    p.add_argument("--device", default="cuda")
    p.add_argument("--shape", default="2,130,4,4,128,128,64;1,100,8,2,64,96,32;4,130,32,32,128,128,64",
                   help="B,T,HQ,H,K,V,M, several separated by ';' (default: two of the GPU test's shapes, which "
                        "take the narrow walks on a GPU, and one with 256 wide-tile programs a walk)")
    args = p.parse_args(argv)
    dtypes = args.dtype.split(",")
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        raise SystemExit(f"unknown --dtype {unknown}; choose from {sorted(DTYPES)}")
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "ops")]  # the tests' input and run helpers
    import gsa.ops.triton.chunk_dh as chunk_dh
    import gsa.ops.triton.chunk_h as chunk_h
    from gsa.ops.triton import SETTINGS
    from launch_runs import chunk_op
    from op_inputs import cast, make_inputs, on, run

    real_plan, taken = chunk_h.walk_plan, set()

    def plan(x, name, *args, **kwargs):  # notes which entry each walk takes
        w = real_plan(x, name, *args, **kwargs)
        taken.add(name if w.BD > 16 or w.NS > 1 else f"{name}-narrow")
        return w

    chunk_h.SPLIT_ON_GPU, chunk_h.walk_plan, chunk_dh.walk_plan = True, plan, plan
    try:
        for shape in args.shape.split(";"):
            B, T, HQ, H, K, V, M = (int(n) for n in shape.split(","))
            for dtype in dtypes:
                torch.manual_seed(0)
                x = on(cast(make_inputs(B=B, T=T, HQ=HQ, H=H, K=K, V=V, M=M, tau=4.0), DTYPES[dtype]), args.device)
                taken.clear()
                want = run(chunk_op, x)
                print(f"{dtype} on {args.device}, B T HQ H K V M = {shape}, walks {'/'.join(sorted(taken))}; "
                      "max |SPLIT - default|")
                for names, stages in CASES:
                    with SETTINGS.override(launch=split_launch(SETTINGS.launch, names, stages)):
                        got = run(chunk_op, x)
                    diffs = {"o": max_diff(got[0], want[0]), **{n: max_diff(got[2][n], want[2][n]) for n in want[2]}}
                    row = " ".join(f"{n} {d:.2e}" for n, d in diffs.items())
                    print(f"{'+'.join(names):24s} stages {stages!s:4s} {row}")
    finally:
        chunk_h.SPLIT_ON_GPU, chunk_h.walk_plan, chunk_dh.walk_plan = False, real_plan, real_plan
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
