"""The walks' launch option "SPLIT" against the default walk on one device, per walk and pipeline depth: the largest
difference of the op's output and of each gradient. On the H100 SPLIT gave wrong outputs in bf16 and fp16 while the
Triton interpreter gives the default's bitwise (gsa/ops/triton/settings.py; docs/log.md, "Kernels"); this narrows
down which walk and which compiled form goes wrong.

    python benchmarks/split_check.py                     # on a GPU (SPLIT's refusal on CUDA tensors lifted here)
    TRITON_INTERPRET=1 python benchmarks/split_check.py --dtype fp16 --device cpu    # the interpreter: all 0

Each row: the walk(s) given SPLIT, their num_stages (None: the entry's own), max |SPLIT - default| of o and of each
gradient (float32 units of the inputs' dtype).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# (walk entries given SPLIT, num_stages for them or None for the entry's own)
CASES = [(("h",), None), (("h",), 2), (("h",), 1), (("dh",), None), (("dh",), 1), (("h", "dh"), None)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--device", default="cuda")
    p.add_argument("--shape", default="2,130,4,4,128,128,64", help="B,T,HQ,H,K,V,M (default: the first GPU test's)")
    args = p.parse_args(argv)
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "ops")]  # the tests' input and run helpers
    import gsa.ops.triton.chunk_h as chunk_h
    from gsa.ops.triton import SETTINGS
    from launch_runs import chunk_op
    from op_inputs import cast, make_inputs, on, run

    chunk_h.SPLIT_ON_GPU = True
    B, T, HQ, H, K, V, M = (int(n) for n in args.shape.split(","))
    x = on(cast(make_inputs(B=B, T=T, HQ=HQ, H=H, K=K, V=V, M=M, tau=4.0), DTYPES[args.dtype]), args.device)
    want = run(chunk_op, x)
    print(f"{args.dtype} on {args.device}, B T HQ H K V M = {args.shape}; max |SPLIT - default|")
    for names, stages in CASES:
        launch = dict(SETTINGS.launch)
        for name in names:
            entry = {**SETTINGS.launch.get(name, {}), "SPLIT": True}
            if stages is not None:
                entry["num_stages"] = stages
            launch[name] = entry
        with SETTINGS.override(launch=launch):
            got = run(chunk_op, x)
        diffs = {"o": (got[0].float() - want[0].float()).abs().max().item()}
        diffs |= {n: (got[2][n].float() - want[2][n].float()).abs().max().item() for n in want[2]}
        print(f"{'+'.join(names):5s} stages {stages!s:4s} " + " ".join(f"{n} {d:.2e}" for n, d in diffs.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
