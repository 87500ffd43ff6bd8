"""fla's own GSA model vs the same model converted to ours (gsa.convert.fla): decode ms/token and a training step.

Timing does not depend on trained values, so the model is a randomly initialised fla GSAForCausalLM at the 1.3B
shape of the paper's checkpoints (fla 0.6.0's GSAConfig defaults: d 2048, 24 layers, 4 heads, 64 slots, tau 8,
vocabulary 32000; `--fla-options` overrides fields, e.g. '{"use_short_conv": true}'), and ours is its conversion
(`from_fla`, the same function). bf16 weights for decoding; training as `gsa bench train` (float32 weights, bf16
autocast, fused AdamW on CUDA; `--precision bf16` for plain bf16).

- decode, per (batch, prefix): fla decodes eagerly through its own cache (`model(token, past_key_values=cache)`:
  the path of its generate()); ours with `gsa.models.StaticDecoder`, eager ("gsa-eager") and, on CUDA, with the
  compiled step in a CUDA graph ("gsa-static"; `gsa.bench.decode.bench_gsa`). Median ms per token over
  --new-tokens steps, and the prefill time (TTFT).
- train, per T: forward (loss on the shifted labels; each model's own loss kernel) + backward + optimizer step,
  median over --steps steps after --warmup, tokens/s and peak memory.

    python benchmarks/recipes/fla_vs_converted.py --out fla-vs-gsa.json                 # 1.3B, on a GPU
    python benchmarks/recipes/fla_vs_converted.py --size tiny --device cpu --prefixes 16 --batches 1 \\
        --new-tokens 2 --seq-lens 32 --tokens 64 --steps 1 --warmup 0 --out /tmp/toy.json  # a toy run (CPU)

On a CPU fla's kernels need Triton's interpreter (TRITON_INTERPRET=1, set here before they are imported), and fla
then keeps T <= 64 on its fused recurrent kernel; the toy run only checks that the script works.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gsa.bench.common import (  # noqa: E402
    device_ms, machine, print_table, profile_kernels, release_memory, write_json,
)
from gsa.bench.train import time_steps  # noqa: E402

SIZES = {
    "1.3b": {},  # fla's defaults are the paper's 1.3B shape
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_heads=2, num_slots=8, vocab_size=256),
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_ms(fn, steps: int, warmup: int, device) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def build_fla(size: str, options: dict, device, dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fla.models.gsa import GSAConfig, GSAForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        model = GSAForCausalLM(GSAConfig(**{**SIZES[size], **options}))
    return model.to(dtype)


def convert(fla_model, dtype):
    """Ours, on the CPU (moved to the device once fla's model is gone, so neither row is charged the other)."""
    from gsa.convert.fla import from_fla

    return from_fla(fla_model, dtype)


@torch.no_grad()
def bench_fla_decode(model, B: int, prefix: int, new: int, device) -> dict:
    ids = torch.randint(0, model.config.vocab_size, (B, prefix), device=device)

    def prefill():
        return model(ids, use_cache=True, logits_to_keep=1).past_key_values

    prefill()
    ttft = _median_ms(prefill, 1, 0, device)
    cache, token = prefill(), ids[:, -1:]
    ms = _median_ms(lambda: model(token, past_key_values=cache, use_cache=True, logits_to_keep=1), new, 3, device)
    return {"ttft_ms": ttft, "ms_per_token": ms}


def decode_rows(fla_model, ours, batches, prefixes, new, device) -> list[dict]:
    from gsa.bench.decode import _DECODERS, bench_gsa

    runs = {"fla": lambda B, prefix: bench_fla_decode(fla_model, B, prefix, new, device),
            "gsa-eager": lambda B, prefix: bench_gsa(ours, B, prefix, new, False, device)}
    if device.type == "cuda":
        runs["gsa-static"] = lambda B, prefix: bench_gsa(ours, B, prefix, new, True, device)
    rows = []
    for B in batches:
        for prefix in prefixes:
            for name, run in runs.items():
                row = {"model": name, "batch": B, "prefix": prefix}
                try:
                    with torch.no_grad():
                        row.update(run(B, prefix))
                except torch.OutOfMemoryError:
                    row["error"] = "out of memory"
                release_memory(device)
                rows.append(row)
    _DECODERS.clear()  # bench_gsa keeps its last decoder (and so the model) for reuse
    return rows


def train_row(name: str, model, T: int, tokens: int, steps: int, warmup: int, device, precision: str,
              profile: bool = False) -> dict:
    B = max(1, tokens // T)
    cuda = device.type == "cuda"
    plain_bf16 = precision == "bf16" and cuda
    model = model.to(torch.bfloat16 if plain_bf16 else torch.float32).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    ids = torch.randint(0, model.config.vocab_size, (B, T), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda and not plain_bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    row = {"model": name, "T": T, "B": B, "tokens": B * T, "precision": precision,
           **time_steps(step, B * T, steps, warmup, device)}
    if profile and device.type == "cuda":  # where the two steps differ: per-kernel device time of one step
        row["profile"] = profile_kernels(step, 1, f"{name} training step, T {T}, B {B}", top=30)
        row.update(profile_summary(row["profile"]))
    return row


# The GSA op's own kernels in a profile: ours are all named chunk_gsa_*; fla-core's are chunk_* (its GSA and GLA
# passes, the state walks, the local cumulative sum) and its slot softmax (softmax_fwd_kernel / softmax_bwd_kernel).
OP_KERNEL = re.compile(r"^(chunk_|softmax_(fwd|bwd)_kernel)")


def profile_summary(kernels: list[dict]) -> dict:
    """A training step's GPU busy time (ms), the share of the GSA op's kernels in it, and the rest."""
    op = sum(k["us"] for k in kernels if OP_KERNEL.match(k["kernel"])) / 1e3
    total = device_ms(kernels)
    return {"device_ms": total, "op_kernels_ms": op, "other_kernels_ms": total - op}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="1.3b", choices=sorted(SIZES))
    p.add_argument("--fla-options", default="{}", help="JSON object of fla GSAConfig fields to override")
    p.add_argument("--prefixes", default="2048,8192", help="decode: prompt lengths (default 2K, 8K)")
    p.add_argument("--batches", default="1,32", help="decode: batch sizes (default 1,32)")
    p.add_argument("--new-tokens", type=int, default=64, help="decode: timed steps (default 64)")
    p.add_argument("--seq-lens", default="2048,4096", help="train: context lengths T (default 2K, 4K)")
    p.add_argument("--tokens", type=int, default=16384, help="train: tokens a batch, B = tokens / T (default 16K)")
    p.add_argument("--steps", type=int, default=5, help="train: timed steps (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="train: untimed steps first (default 2)")
    p.add_argument("--precision", default="autocast", choices=["autocast", "bf16"])
    p.add_argument("--skip", choices=["decode", "train"], help="run only the other benchmark")
    p.add_argument("--profile", action="store_true", help="train: also each step's per-kernel device time (CUDA)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--out", type=Path, required=True, help="JSON path")
    args = p.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before fla's kernels are imported
        import triton.runtime.autotuner as autotuner

        # The interpreter has no device to time autotuning candidates on; they compute the same function.
        autotuner.Autotuner.prune_configs = lambda self, kwargs: self.configs[:1]

    options = json.loads(args.fla_options)
    if device.type == "cpu":
        options.setdefault("fuse_cross_entropy", False)  # fla's fused loss refuses CPU tensors
    result = {"benchmark": "fla-vs-converted", "size": args.size, "fla_options": options, "machine": machine(device)}
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.skip != "decode":
        fla_model = build_fla(args.size, options, device, dtype).eval()
        ours = convert(fla_model, dtype).to(device)
        rows = decode_rows(fla_model, ours, [int(b) for b in args.batches.split(",")],
                           [int(t) for t in args.prefixes.split(",")], args.new_tokens, device)
        del fla_model, ours
        release_memory(device)
        print_table(rows, [("model", "model", "s"), ("batch", "batch", "d"), ("prefix", "prefix", "d"),
                           ("ttft_ms", "TTFT ms", ".1f"), ("ms_per_token", "ms/token", ".3f"), ("error", "error", "s")])
        result["decode"] = rows
    if args.skip != "train":
        rows = []
        for T in [int(t) for t in args.seq_lens.split(",")]:
            fla_model = build_fla(args.size, options, device, torch.float32)
            ours = convert(fla_model, torch.float32)
            rows.append(train_row("fla", fla_model, T, args.tokens, args.steps, args.warmup, device, args.precision,
                                  args.profile))
            del fla_model
            release_memory(device)
            rows.append(train_row("gsa", ours.to(device), T, args.tokens, args.steps, args.warmup, device,
                                  args.precision, args.profile))
            del ours
            release_memory(device)
        print_table(rows, [("model", "model", "s"), ("T", "T", "d"), ("B", "B", "d"), ("step_ms", "step ms", ".1f"),
                           ("tokens_per_s", "tokens/s", ",.0f"), ("peak_gib", "peak GiB", ".2f"),
                           ("op_kernels_ms", "op kernels ms", ".1f"), ("other_kernels_ms", "other kernels ms", ".1f"),
                           ("error", "error", "s")])
        result["train"] = rows
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
