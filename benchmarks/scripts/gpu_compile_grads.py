"""Where do the compiled MQAR model's gradients go wrong? (issue 4; gpu_mqar_grads.py found bf16 + torch.compile
gradients ~100% off on the H200 while the loss matched)

One MQAR model (configs/mqar-gsa-d128.toml, at initialisation) and one batch; the gradient of every parameter in
each case below, against float64 on the torch backend with the same weights and batch. A case is: autocast
(bf16) or not, which blocks are compiled ("all", "0", "1", "attn": only each block's attention layer) and with
which torch.compile backend ("inductor": codegen; "aot_eager": the same traced forward/backward graphs run
eagerly), and the attention op's backend ("auto" = Triton on CUDA; "torch"). Printed per case: the largest
relative error over the parameter tensors, how many tensors got an all-zero gradient, the norm ratio
||g|| / ||g64|| of the worst tensor, and the three worst tensors.

    python benchmarks/scripts/gpu_compile_grads.py                       # on a GPU
    TRITON_INTERPRET=1 python benchmarks/scripts/gpu_compile_grads.py --device cpu --batch 2 --seq 64 --pairs 4
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os

import torch

import gsa.nn.attention as attention_module
import gsa.nn.backend
from gsa.data import mqar_batch
from gsa.train.config import load_config
from gsa.train.model import blocks, build_model, labelled_positions_loss

# (name, bf16 autocast, compiled blocks, compile backend, op backend, norm kernels)
CASES = [
    ("fp32 eager", False, None, None, "auto", "auto"),
    ("bf16 eager", True, None, None, "auto", "auto"),
    ("fp32 compile", False, "all", "inductor", "auto", "auto"),
    ("bf16 compile", True, "all", "inductor", "auto", "auto"),
    ("bf16 compile aot_eager", True, "all", "aot_eager", "auto", "auto"),
    ("fp32 compile aot_eager", False, "all", "aot_eager", "auto", "auto"),
    ("bf16 compile op=torch", True, "all", "inductor", "torch", "auto"),
    ("bf16 compile block 0", True, "0", "inductor", "auto", "auto"),
    ("bf16 compile block 1", True, "1", "inductor", "auto", "auto"),
    ("bf16 compile attn only", True, "attn", "inductor", "auto", "auto"),
    ("bf16 compile norms=triton", True, "all", "inductor", "auto", "triton"),
]


def grads(model, batch, autocast: bool, dev: str) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    with torch.autocast(dev, dtype=torch.bfloat16, enabled=autocast):
        loss = labelled_positions_loss(model, batch)
    loss.backward()
    return loss.item(), {n: (p.grad.detach().double().clone() if p.grad is not None else torch.zeros_like(p, dtype=torch.float64))
                         for n, p in model.named_parameters()}


def compile_part(model, which: str, backend: str) -> None:
    for i, block in enumerate(blocks(model)):
        if which == "attn":
            block.attn.compile(backend=backend)
        elif which in ("all", str(i)):
            block.compile(backend=backend)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/mqar-gsa-d128.toml")
    p.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. model.forget_gate=\"none\"")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    p.add_argument("--out", default=os.environ.get("OUT", "/tmp/out"))
    args = p.parse_args()
    dev = args.device
    print(f"torch {torch.__version__}, device {dev}"
          + (f" ({torch.cuda.get_device_name()})" if dev == "cuda" else ""), flush=True)
    cfg = load_config(args.config, ["model.use_short_conv=true", *args.set])
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.data.mqar_vocab_size).to(dev)
    batch = {k: v.to(dev) for k, v in mqar_batch(args.batch, args.seq, args.pairs, seed=[2]).items()}
    original_op = attention_module.gated_slot_attention
    l64, g64 = grads(copy.deepcopy(model).double(), batch, False, dev)
    wanted = set(args.cases.split(",")) if args.cases else None
    rows = []
    print("| case | loss - loss64 | max rel err | zero grads | ||g||/||g64|| (worst) | worst tensors |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, ac, which, cbackend, op_backend, kernels in CASES:
        if wanted is not None and name not in wanted:
            continue
        torch._dynamo.reset()
        m = copy.deepcopy(model)
        attention_module.gated_slot_attention = functools.partial(original_op, backend=op_backend)
        gsa.nn.backend.KERNELS = kernels
        try:
            if which is not None:
                compile_part(m, which, cbackend)
            loss, g = grads(m, batch, ac, dev)
        except Exception as e:  # report and go on: one failing case should not hide the others
            print(f"| {name} | failed: {type(e).__name__}: {str(e).splitlines()[0][:120]} |", flush=True)
            continue
        finally:
            attention_module.gated_slot_attention = original_op
            gsa.nn.backend.KERNELS = "auto"
        rel = {n: ((g[n] - r).norm() / r.norm().clamp_min(1e-30)).item() for n, r in g64.items()}
        ratio = {n: (g[n].norm() / r.norm().clamp_min(1e-30)).item() for n, r in g64.items()}
        zeros = [n for n in g if g[n].abs().max() == 0 and g64[n].abs().max() > 0]
        worst = sorted(rel, key=rel.get, reverse=True)[:3]
        rows.append({"case": name, "loss": loss, "loss64": l64, "rel": rel, "norm_ratio": ratio, "zero": zeros})
        print(f"| {name} | {loss - l64:+.1e} | {rel[worst[0]]:.1e} | {len(zeros)} | {ratio[worst[0]]:.2f} | "
              + ", ".join(f"{n.removeprefix('model.')} {rel[n]:.1e}" for n in worst) + " |", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "compile_grads.json"), "w") as fh:
        json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
