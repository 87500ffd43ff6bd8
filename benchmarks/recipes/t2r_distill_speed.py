"""Training speed of T2R's logit-distillation stage (the hybrid recipe's stage 2) at the teacher's real architecture,
without its weights or data, for variants of the KL's path and of the op's launch settings.

The hybrid stage 2 ran at 58K tokens/s on an H100 on 2026-12-06 and at 35K on 2026-12-07 (docs/log.md, "T2R"); in
between the KL, the passkey rows and the kernels' host path changed. This times the step alone: a random Llama with
SmolLM2-135M's config (benchmarks/recipes/t2r_decode_speed.py) as the teacher in float32, its hybrid conversion
(window 64 + 4 sinks, 64 slots) as the student, bf16 autocast as the trainer runs them, AdamW, random tokens, each
optimizer step `--accum` micro-batches of `--batch` x `--seq` (the recipe's 2 x 8 x 2048). Per variant: tokens/s
(median over --steps steps after --warmup) and peak GiB; with --profile, the default variant's kernels by device
time over two steps.

    python benchmarks/recipes/t2r_distill_speed.py --profile --out t2r-distill-speed.json   # ~3 minutes on an H100
    python benchmarks/recipes/t2r_distill_speed.py --student pure --batch 16 --seq 512 --accum 1 --profile \
        --variants default,one-stream,compiled --out t2r-pure-distill-speed.json    # the pure recipe's stage 2
    python benchmarks/recipes/t2r_distill_speed.py --layers 2 --batch 2 --seq 64 --accum 1 --steps 2 --warmup 1
        --variants default,plain-kl --out /tmp/speed.json                         (a smoke run on a CPU, seconds)

Variants: default (the fused KL on CUDA), chunked-kl (kl_to_teacher with its Triton kernels off: distill._ChunkedKL),
plain-kl (the formula through autograd, kl_to_teacher before 2026-12-07), one-stream (SETTINGS.overlap off),
no-direct (direct launches off), compiled (a copy of the student with each block under torch.compile, as the
trainer's `train.compile = true`; its compile time is in the warmup steps, reported apart as first_step_s).

--student pure times the pure recipe's student instead (configs/t2r-pure-stage0.toml's conversion: 64 slots, learned
feature maps, gate biases, no window), whose stage 2 runs micro-batches of 16 x 512 (--batch 16 --seq 512 --accum 1)
at ~33K tokens/s (docs/log.md, "T2R").
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # t2r_decode_speed

import gsa.convert.distill as distill  # noqa: E402
from gsa.convert import from_pretrained_transformer  # noqa: E402
from gsa.ops.triton.settings import SETTINGS  # noqa: E402

VARIANTS = ("default", "chunked-kl", "plain-kl", "one-stream", "no-direct", "compiled")
STUDENTS = ("hybrid", "pure")
PURE_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "t2r-pure-stage0.toml"


def student_options(kind: str) -> dict:
    """from_pretrained_transformer's options for a student kind: the hybrid of the step timed since 2026-12-07 (window
    64 + 4 sinks, 64 slots), or the pure recipe's conversion, read from its stage-0 config's [model] section."""
    if kind == "hybrid":
        return dict(num_slots=64, window_size=64, num_sink_tokens=4)
    from gsa.train import load_config

    return {k: v for k, v in load_config(PURE_CONFIG, []).model.items() if k not in ("type", "teacher")}


def _plain(s, t, mask=None, temperature=1.0):
    """The formula through autograd, as kl_to_teacher was before 2026-12-07 (every row: no padding here)."""
    return distill._kl_rows(s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1]), temperature).mean() * temperature**2


@contextlib.contextmanager
def variant(name: str):
    """The variant's KL in gsa.convert.distill (which logit_distillation_loss calls: chunked-kl keeps kl_to_teacher
    but turns its Triton kernels off, plain-kl replaces it) or its SETTINGS."""
    patches = {"chunked-kl": ("use_triton_kernels", lambda x: False), "plain-kl": ("kl_to_teacher", _plain)}
    settings = {"one-stream": dict(overlap=False), "no-direct": dict(direct_launch=False)}.get(name, {})
    attr, new = patches.get(name, (None, None))
    old = getattr(distill, attr) if attr else None
    if attr:
        setattr(distill, attr, new)
    try:
        with SETTINGS.override(**settings):
            yield
    finally:
        if attr:
            setattr(distill, attr, old)


def optimizer_step(student, teacher, args, device):
    """One AdamW step of the distillation loss over `args.accum` micro-batches of random tokens, as a function
    returning the step's loss (a detached tensor)."""
    bf16 = device.type == "cuda"
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-5)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, teacher.config.vocab_size, (args.accum, args.batch, args.seq), generator=g).to(device)

    def step() -> torch.Tensor:
        total = torch.zeros((), device=device)
        for micro in ids:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = distill.logit_distillation_loss(student, teacher, micro) / args.accum
            loss.backward()
            total += loss.detach()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return total

    return step


def measure(student, teacher, args, device, name: str) -> dict:
    """tokens/s and peak GiB of `args.steps` optimizer steps of variant `name` after `args.warmup`; the first step's
    seconds too (compile time, for "compiled")."""
    if name == "compiled":  # a copy: the blocks are compiled in place, and the variants after it must stay eager
        from gsa.train.model import apply_compile

        student = copy.deepcopy(student)
        apply_compile(student)
    step = optimizer_step(student, teacher, args, device)
    times = []
    with variant(name):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        for i in range(args.warmup + args.steps):
            t0 = time.perf_counter()
            loss = step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i == 0:
                first = time.perf_counter() - t0
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return {"variant": name, "tokens_per_s": args.accum * args.batch * args.seq / statistics.median(times),
            "step_s": statistics.median(times), "first_step_s": first, "peak_gib": peak, "loss": loss.item()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--accum", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--layers", type=int, default=30, help="fewer for a CPU smoke run")
    p.add_argument("--student", choices=STUDENTS, default="hybrid", help="the student's kind (module docstring)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--profile", action="store_true", help="also the default variant's kernels over 2 steps (CUDA)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    for key in ("batch", "seq", "accum", "steps", "layers"):
        if getattr(args, key) < 1:
            raise SystemExit(f"--{key} must be >= 1, got {getattr(args, key)}")
    from transformers import LlamaForCausalLM

    from t2r_decode_speed import smollm2_135m_config

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    teacher = LlamaForCausalLM(smollm2_135m_config(num_hidden_layers=args.layers)).eval()
    student = from_pretrained_transformer(teacher, **student_options(args.student)).train()
    teacher, student = teacher.to(device), student.to(device)
    for q in teacher.parameters():
        q.requires_grad_(False)
    rows = []
    for name in names:
        rows.append(measure(student, teacher, args, device, name))
        print(json.dumps(rows[-1]), flush=True)
    kernels = None
    if args.profile and device.type == "cuda":
        from gsa.bench.common import profile_kernels

        kernels = profile_kernels(optimizer_step(student, teacher, args, device), 2, "one optimizer step", top=30)
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else None
    print(f"{gpu or 'cpu'}: distillation step of the {args.student} student, {args.accum} x {args.batch} x {args.seq} "
          f"tokens, {args.layers} layers")
    print("| variant | tokens/s | step s | first step s | peak GiB |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        print(f"| {r['variant']} | {r['tokens_per_s']:.0f} | {r['step_s']:.3f} | {r['first_step_s']:.1f} | {peak} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    converted = {k: getattr(student.config, k) for k in ("num_slots", "window_size", "num_sink_tokens", "feature_map",
                                                          "gate_bias")}
    args.out.write_text(json.dumps({"device": str(device), "gpu": gpu, "args": vars(args) | {"out": str(args.out)},
                                    "student": converted, "rows": rows, "kernels": kernels}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
