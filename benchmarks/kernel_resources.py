"""Registers, spill stack and shared memory of every GSA Triton kernel, compiled for a GPU target without a GPU.

Runs the triton op's forward and backward once on CPU tensors of a chosen shape with the kernel launches
intercepted: each launch is compiled (Triton's own ptxas) for the target instead of run, and `cuobjdump
-res-usage` reads the resources. A kernel at REG 255 with a non-zero STACK spills registers to local memory, the
first thing to look at before timing a kernel change on a lent GPU. Each kernel's compile time (Triton's passes and
ptxas, one at a time on this machine) bounds the op's first call, which compiles them in parallel.

    python benchmarks/kernel_resources.py                      # 1.3B shape (B 8, T 2048, H 4, K = V = 512, M 64), sm_90
    python benchmarks/kernel_resources.py --shape small-head --arch 90
    python benchmarks/kernel_resources.py --shape tiny --json rows.json  # also as JSON (the CI test reads it)
    python benchmarks/kernel_resources.py --sass                # + instructions in each kernel's largest loop body

`--sass` reads the SASS (`cuobjdump -sass`) and counts the instructions between each backward branch and its
target: for the state walks that is one chunk step (docs/log.md, "Kernels", "The walks' instructions": kernel_h's
step 2267 instructions against fla-core's 1255 at 1.3b, the same 1.8x as their times).

Needs triton with the NVIDIA backend (the bundled ptxas / cuobjdump); no CUDA device or driver.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

SHAPES = {
    "1.3b": dict(B=8, T=2048, HQ=4, H=4, K=512, V=512, M=64),
    "grouped": dict(B=8, T=2048, HQ=32, H=8, K=128, V=128, M=64),
    "small-head": dict(B=8, T=2048, HQ=16, H=16, K=64, V=64, M=32),
    "m128": dict(B=1, T=256, HQ=16, H=16, K=128, V=128, M=128),
    "hd64": dict(B=1, T=256, HQ=32, H=32, K=64, V=64, M=64),
    "decode": dict(B=1, T=1, HQ=4, H=4, K=512, V=512, M=64),
    "tiny": dict(B=1, T=130, HQ=4, H=2, K=48, V=40, M=24),  # awkward sizes, grouped heads (CI)
}
_TYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.int32: "i32",
          torch.int64: "i64"}


def _arg_type(x):
    if isinstance(x, torch.Tensor):
        return "*" + _TYPES[x.dtype]
    if isinstance(x, bool):
        return "i1"
    if isinstance(x, int):
        return "i64" if abs(x) >= 2**31 else "i32"
    if isinstance(x, float):
        return "fp32"
    raise TypeError(f"unsupported kernel argument {x!r}")


def _resources(cubin: bytes) -> dict:
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if "REG:" in x)
    return {k: int(v) for k, v in (field.split(":") for field in line.split() if ":" in field and field[0].isalpha()
                                   and field.split(":")[1].isdigit())}


def loop_sizes(cubin: bytes) -> list[int]:
    """Instructions in each loop body of a kernel's SASS: from the target of each backward branch to the branch
    (nested loops count their inner loops too)."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True, check=True).stdout
    lines = [(int(m.group(1), 16), x) for x in out.splitlines() if (m := re.match(r"\s+/\*([0-9a-f]{4,6})\*/", x))]
    index = {address: i for i, (address, _) in enumerate(lines)}
    sizes = []
    for i, (address, line) in enumerate(lines):
        branch = re.search(r"BRA.*?0x([0-9a-f]+)", line)
        target = int(branch.group(1), 16) if branch else None
        if target is not None and target < address and target in index:
            sizes.append(i - index[target] + 1)
    return sizes


def collect(shape: dict, arch: int, dtype=torch.bfloat16, warps: int | None = None, linear_read: bool = False,
            sass: bool = False, only: tuple[str, ...] = ()) -> list[dict]:
    """A row per kernel (and variant) the op launches at `shape`, compiled for sm_`arch`; `only`: just the kernels
    whose names contain one of these strings (the others are neither compiled nor listed)."""
    target = GPUTarget("cuda", arch, 128 if arch >= 90 else 64)
    seen, rows = set(), []

    def fake_run(self, *args, grid, warmup, **kwargs):
        options = {k: kwargs.pop(k) for k in ("num_warps", "num_stages", "num_ctas", "launch_pdl") if k in kwargs}
        if warps:
            options["num_warps"] = warps
        bound = dict(zip(self.arg_names, args))
        bound.update(kwargs)
        sig, consts = {}, {}
        for i, name in enumerate(self.arg_names):
            value = bound.get(name, self.params[i].default)
            if self.params[i].is_constexpr or value is None:
                sig[name] = "constexpr"
                consts[(i,)] = value
            else:
                sig[name] = _arg_type(value)
        key = (self.__name__, tuple(sorted((str(k), str(v)) for k, v in consts.items())), tuple(options.items()))
        if key in seen or (only and not any(part in self.__name__ for part in only)):
            return None
        seen.add(key)
        t0 = time.perf_counter()
        k = triton.compile(ASTSource(fn=self, signature=sig, constexprs=consts), target=target,
                           options={"num_warps": 4, "num_stages": 3, **options})
        seconds = time.perf_counter() - t0
        flags = ",".join(f"{n}={bound[n]}"
                         for n in ("BACKWARD", "SOFTMAX", "LINEAR", "TRANSPOSED", "TILED", "PDL", "GROUP", "WHOLE")
                         if n in bound and (n not in ("TILED", "PDL", "GROUP", "WHOLE") or bound[n]))
        rows.append({"kernel": self.__name__ + (f" [{flags}]" if flags else ""),
                     "warps": options.get("num_warps", 4), "shared": k.metadata.shared, "compile_s": round(seconds, 2),
                     **_resources(k.asm["cubin"]),
                     **({"loop": max(loop_sizes(k.asm["cubin"]), default=0)} if sass else {})})
        return None

    from gsa.ops.triton import chunk_gsa, fused_recurrent_gsa, fused_recurrent_gsa_step
    from gsa.ops.triton.norm import rms_norm_triton
    from gsa.ops.triton.settings import SETTINGS
    from gsa.ops.triton.swiglu import swiglu_triton

    B, T, HQ, H, K, V, M = (shape[k] for k in ("B", "T", "HQ", "H", "K", "V", "M"))
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, T, HQ, K, generator=g).to(dtype).requires_grad_()
    k = torch.randn(B, T, H, K, generator=g).to(dtype).requires_grad_()
    v = torch.randn(B, T, H, V, generator=g).to(dtype).requires_grad_()
    s = torch.randn(B, T, H, M, generator=g).softmax(-1).to(dtype).requires_grad_()
    gate = (-torch.rand(B, T, H, M, generator=g)).to(dtype).requires_grad_()
    original = JITFunction.run
    JITFunction.run = fake_run
    # every launch through JITFunction.run (direct launches would go past the stand-in to a driver)
    with SETTINGS.override(direct_launch=False):
        try:
            if T == 1:
                h0 = (torch.zeros(B, H, K, M), torch.zeros(B, H, M, V))
                fused_recurrent_gsa(q, k, v, s, gate, K**-0.5, h0, True, linear_read=linear_read)
                # the decode step from raw projections: swish and the gate inside the kernels (GATE, SWISH)
                with torch.no_grad():
                    fused_recurrent_gsa_step(q, k, v, gate, K**-0.5, 8.0, h0, swish=True, linear_read=linear_read)
                    # with programmatic dependent launch, as on a Hopper GPU (launch.pdl_launch; off on CPU tensors):
                    # the step's kernels and the one-token decode product (gsa.ops.triton.gemv) at the model's hidden
                    # size
                    import gsa.ops.triton.gemv as gemv
                    import gsa.ops.triton.launch as launch

                    pdl, launch.use_pdl = launch.use_pdl, lambda device: True
                    try:
                        fused_recurrent_gsa_step(q, k, v, gate, K**-0.5, 8.0, h0, swish=True, linear_read=linear_read)
                        for n_in in (HQ * V, 2 * HQ * V):
                            gemv._gemv(torch.randn(1, n_in).to(dtype), torch.randn(64, n_in).to(dtype), None)
                    finally:
                        launch.use_pdl = pdl
            else:
                o, _ = chunk_gsa(q, k, v, s, gate, K**-0.5, None, False, None, linear_read=linear_read)
                o.backward(torch.ones_like(o))
                # the segmented state walk (few long sequences on a GPU): kernel_h with SEGMENTED and its carry kernel
                # (and the reverse walk's, SETTINGS.segment_dh)
                with SETTINGS.override(state_segments=2, segment_dh=True):
                    o, _ = chunk_gsa(q, k, v, s, gate, K**-0.5, None, True, None, linear_read=linear_read)
                    o.backward(torch.ones_like(o))
                # the layer's output norm of swish(o), forward and backward (gsa.ops.triton.norm)
                x = o.detach().reshape(B * T, HQ * V).requires_grad_()
                rms_norm_triton(x, torch.ones(HQ * V, requires_grad=True), 1e-5, True).sum().backward()
                gu = torch.randn(2, B * T, 4 * HQ * V, dtype=dtype, generator=g).requires_grad_()
                swiglu_triton(gu[0], gu[1]).sum().backward()
                # logit distillation's loss (gsa.ops.triton.kl) over rows of a vocabulary of two tiles and a bit
                from gsa.ops.triton.kl import BV, fused_kl

                student = torch.randn(4, 2 * BV + 5, dtype=dtype, generator=g).requires_grad_()
                fused_kl(student, torch.randn(4, 2 * BV + 5, dtype=dtype, generator=g), torch.ones(4), 1.0).backward()
        finally:
            JITFunction.run = original
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="1.3b", choices=sorted(SHAPES))
    p.add_argument("--arch", type=int, default=90, help="compute capability x 10 (default 90: Hopper)")
    p.add_argument("--warps", type=int, default=None, help="compile every kernel with this num_warps instead of "
                   "the launcher's")
    p.add_argument("--linear-read", action="store_true", help="the kernels of slot_read='linear' (the ablation)")
    p.add_argument("--launch", default="{}", help="JSON entries over gsa.ops.triton.SETTINGS.launch, e.g. "
                   "'{\"ds@m128\": {}}' (the slot-tiled kernel_ds at M = 128)")
    p.add_argument("--settings", default="{}", help="JSON object of other gsa.ops.triton.SETTINGS fields, e.g. "
                   "'{\"state_dots\": \"input\"}' (as `gsa bench grid --settings`)")
    p.add_argument("--json", help="also write the rows (kernel, warps, REG, STACK, shared) to this JSON file")
    p.add_argument("--sass", action="store_true", help="also count the instructions of each kernel's largest loop body")
    p.add_argument("--kernels", default="", help="comma-separated parts of kernel names: compile only the kernels "
                   "whose names contain one (e.g. kernel_ds,kernel_dh); default every kernel")
    args = p.parse_args(argv)
    from gsa.bench.grid import settings_variants
    from gsa.ops.triton.settings import SETTINGS

    fields = settings_variants([args.settings])[0]
    with SETTINGS.override(launch={**SETTINGS.launch, **json.loads(args.launch)}, **fields):
        rows = collect(SHAPES[args.shape], args.arch, warps=args.warps, linear_read=args.linear_read, sass=args.sass,
                       only=tuple(part for part in args.kernels.split(",") if part))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"shape": SHAPES[args.shape], "arch": args.arch, "triton": triton.__version__, "rows": rows}, f,
                      indent=1)
    print(f"{args.shape} {SHAPES[args.shape]}, sm_{args.arch}, triton {triton.__version__}")
    print(f"{'kernel':46s} {'warps':>5s} {'REG':>5s} {'STACK':>6s} {'shared B':>9s} {'compile s':>9s}"
          + (f" {'loop':>6s}" if args.sass else ""))
    for r in rows:
        print(f"{r['kernel']:46s} {r['warps']:5d} {r.get('REG', 0):5d} {r.get('STACK', 0):6d} {r['shared']:9d} "
              f"{r['compile_s']:9.2f}" + (f" {r['loop']:6d}" if args.sass else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
