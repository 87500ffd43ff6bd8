"""Logit distillation's loss on a GPU, three ways: forward+backward time and the memory it adds, for
gsa.convert.distill.kl_to_teacher's fused Triton kernels (the default on CUDA), its chunked PyTorch path (elsewhere)
and the plain PyTorch formula autograd differentiates (what it was before either).

    python benchmarks/kl_loss.py --rows 16384 --vocab 49152     # the hybrid T2R stage 2's micro-batch; ~30 s

Rows of bf16 logits (student with gradient, teacher without), a fifth of the rows masked out; time is the median of
triton.testing.do_bench; memory is the peak above the inputs during one forward+backward. Prints a table and, with
--out, writes it as JSON.
"""

from __future__ import annotations

import argparse
import json

import torch
import triton

import gsa.convert.distill as distill
import gsa.nn.backend as backend
from gsa.bench.common import extra_bytes


def plain(s, t, mask):
    """The formula through autograd, in float32 (kl_to_teacher before 2026-12-07)."""
    return distill._kl_rows(s, t, 1.0)[mask].mean()


def variants():
    def with_kernels(kernels):
        def run(s, t, mask):
            old, backend.KERNELS = backend.KERNELS, kernels
            try:
                return distill.kl_to_teacher(s, t, mask)
            finally:
                backend.KERNELS = old
        return run
    return {"fused (Triton)": with_kernels("auto"), "chunked (PyTorch)": with_kernels("torch"), "plain formula": plain}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=16384)
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--out", default=None, help="write the table as JSON here")
    args = ap.parse_args(argv)
    if args.rows < 1 or args.vocab < 1:
        raise SystemExit(f"--rows and --vocab must be positive, got {args.rows} and {args.vocab}")
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/kl_loss.py needs a CUDA device")
    g = torch.Generator(device="cuda").manual_seed(0)
    s = (4 * torch.randn(args.rows, args.vocab, device="cuda", generator=g)).bfloat16().requires_grad_()
    t = (4 * torch.randn(args.rows, args.vocab, device="cuda", generator=g)).bfloat16()
    mask = torch.rand(args.rows, device="cuda", generator=g) > 0.2
    rows = []
    for name, fn in variants().items():
        def step():
            s.grad = None
            fn(s, t, mask).backward()
        step()  # compile, allocate
        torch.cuda.synchronize()
        loss = fn(s, t, mask).item()
        ms = triton.testing.do_bench(step)
        s.grad = None
        rows.append(dict(variant=name, ms=ms, extra_gib=extra_bytes(step) / 2**30, loss=loss))
    gpu = torch.cuda.get_device_name()
    print(f"{gpu}: KL fwd+bwd over [{args.rows}, {args.vocab}] bf16 logits")
    print(f"| variant | fwd+bwd ms | extra GiB | loss |\n| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['variant']} | {r['ms']:.2f} | {r['extra_gib']:.2f} | {r['loss']:.6f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(gpu=gpu, rows=args.rows, vocab=args.vocab, results=rows), f, indent=1)


if __name__ == "__main__":
    main()
