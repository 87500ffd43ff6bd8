"""Training throughput and memory: GSA vs a Llama-style Transformer of the same size (the paper's Figure 4a/b).

Each row is one (model, variant, context length) at a fixed number of tokens a batch (B = tokens / T): fused
AdamW, bf16 autocast on GPU (float32 on CPU), full forward + backward + optimizer step; the time is the median
over `--steps` steps after `--warmup` steps (compilation and Triton's first call excluded), peak memory is
torch.cuda.max_memory_allocated over the timed steps. Writes JSON and a PNG.

    python -m gsa.bench.train                                 # GSA-1.3B vs Llama-1.3B, T = 2K..16K, 16K tokens
    python -m gsa.bench.train --size tiny --seq-lens 64,128 --tokens 256 --steps 2   # a toy run (CPU)
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from gsa.bench.common import release_memory

# d, layers, GSA heads, Transformer heads, SwiGLU width, vocab
SIZES = {
    "1.3b": dict(hidden_size=2048, num_hidden_layers=24, gsa_heads=4, llama_heads=16, intermediate_size=5632,
                 vocab_size=32000),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, gsa_heads=2, llama_heads=4, intermediate_size=128,
                 vocab_size=256),
}
# name: (model kind, GSA slots, keep chunk states for backward). "llama-fused": the same Llama with its RMSNorms and
# SwiGLU products through gsa's Triton kernels (what those kernels alone give a Transformer); "gsa-unfused": GSA with
# PyTorch element-wise ops instead of them (gsa.nn.backend.KERNELS = "torch").
VARIANTS = {
    "llama": ("llama", None, False),
    "llama-fused": ("llama-fused", None, False),
    "gsa": ("gsa", 64, False),
    "gsa-unfused": ("gsa", 64, False),
    "gsa-keep-states": ("gsa", 64, True),
    "gsa-M32": ("gsa", 32, False),
    "gsa-M128": ("gsa", 128, False),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="1.3b", choices=sorted(SIZES), help="model size (default 1.3b)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {list(VARIANTS)}")
    p.add_argument("--seq-lens", default="2048,4096,8192,16384", help="context lengths T (default 2K..16K)")
    p.add_argument("--tokens", type=int, default=16384, help="tokens a batch; B = tokens / T (default 16384)")
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported; default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--precision", default="autocast", choices=["autocast", "bf16"],
                   help="autocast (default): float32 weights and AdamW state, bf16 autocast; bf16: bf16 weights, "
                   "gradients and AdamW state (plain bf16)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default runs/bench/<gpu>/train.json)")


def build(variant: str, size: str, max_len: int, device, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from gsa.models import GSAConfig, GSAForCausalLM

    kind, slots, keep = VARIANTS[variant]
    s = SIZES[size]
    common = dict(hidden_size=s["hidden_size"], num_hidden_layers=s["num_hidden_layers"],
                  intermediate_size=s["intermediate_size"], vocab_size=s["vocab_size"], tie_word_embeddings=False)
    with torch.device(device):
        if kind in ("llama", "llama-fused"):
            cfg = LlamaConfig(num_attention_heads=s["llama_heads"], num_key_value_heads=s["llama_heads"],
                              max_position_embeddings=max_len, attn_implementation="sdpa", **common)
            model = LlamaForCausalLM(cfg)
            if kind == "llama-fused":
                use_gsa_kernels(model)
        else:
            model = GSAForCausalLM(GSAConfig(num_heads=s["gsa_heads"], num_slots=slots, **common))
            for block in model.model.layers:
                block.attn.keep_states = keep
    return model.to(dtype)


def use_gsa_kernels(model) -> None:
    """Route a transformers Llama's RMSNorms and MLP products through gsa's modules' functions (Triton kernels on
    CUDA in eager mode, gsa.nn.backend), in place. The norm's output stays in the input's dtype (transformers'
    multiplies by a float32 weight after the cast, so under autocast its output is float32)."""
    from gsa.nn.mlp import gated_product
    from gsa.nn.norm import rms_norm

    def norm_forward(m):
        return lambda x: rms_norm(x, m.weight, m.variance_epsilon)

    def mlp_forward(m):  # the bench's Llama config keeps transformers' default hidden_act, "silu"
        return lambda x: m.down_proj(gated_product(m.gate_proj(x), m.up_proj(x), m.config.hidden_act))

    for m in model.modules():
        if type(m).__name__ == "LlamaRMSNorm":
            m.forward = norm_forward(m)
        elif type(m).__name__ == "LlamaMLP":
            m.forward = mlp_forward(m)


def run_one(variant: str, size: str, T: int, tokens: int, steps: int, warmup: int, device,
            precision: str = "autocast") -> dict:
    import torch

    B = max(1, tokens // T)
    cuda = device.type == "cuda"
    row = {"variant": variant, "T": T, "B": B, "tokens": B * T, "precision": precision}
    if cuda:  # memory still held from an earlier row would be charged to this one: say so
        row["start_gib"] = torch.cuda.memory_allocated(device) / 2**30
    plain_bf16 = precision == "bf16" and cuda
    model = build(variant, size, T, device, torch.bfloat16 if plain_bf16 else torch.float32)
    row["params"] = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    ids = torch.randint(0, model.config.vocab_size, (B, T), device=device)

    def step():
        from gsa.nn import backend

        kernels, backend.KERNELS = backend.KERNELS, ("torch" if variant == "gsa-unfused" else backend.KERNELS)
        try:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda and not plain_bf16):
                loss = model(ids, labels=ids).loss
            loss.backward()
        finally:
            backend.KERNELS = kernels
        opt.step()
        opt.zero_grad(set_to_none=True)

    try:
        row.update(time_steps(step, B * T, steps, warmup, device))
    finally:
        del model, opt
        release_memory(device)
    return row


def time_steps(step, tokens: int, steps: int, warmup: int, device) -> dict:
    """Call step() `warmup` times untimed, then `steps` times: {"step_ms": the median, "tokens_per_s" for `tokens`
    tokens a step, and on CUDA "peak_gib": torch.cuda.max_memory_allocated over the timed steps}, or
    {"error": "out of memory"}."""
    import torch

    cuda = device.type == "cuda"
    try:
        for _ in range(warmup):
            step()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    except torch.OutOfMemoryError:
        return {"error": "out of memory"}
    ms = statistics.median(times) * 1e3
    out = {"step_ms": ms, "tokens_per_s": tokens / ms * 1e3}
    if cuda:
        out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gsa bench train", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from gsa.bench.common import default_path, machine, pick_device, plot_panels, print_table, write_json

    device = pick_device(args.device)
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"gsa bench train: unknown variants {unknown}; choose from {list(VARIANTS)}")
    seq_lens = [int(x) for x in args.seq_lens.split(",")]
    rows = []
    for variant in tqdm(variants, desc="variants"):
        for T in seq_lens:
            rows.append(run_one(variant, args.size, T, args.tokens, args.steps, args.warmup, device, args.precision))
    print(f"\ntraining: {args.size}, {args.tokens} tokens a batch, {args.precision}, {machine(device)}")
    print_table(rows, [("variant", "variant", "s"), ("T", "T", "d"), ("B", "B", "d"), ("step_ms", "step ms", ".1f"),
                       ("tokens_per_s", "tokens/s", ",.0f"), ("peak_gib", "peak GiB", ".2f"), ("start_gib", "start GiB", ".2f"),
                       ("error", "error", "s")])
    out = args.out or default_path(device, "train.json")
    write_json(out, {"benchmark": "train", "size": args.size, "tokens_per_batch": args.tokens,
                     "precision": args.precision,
                     "machine": machine(device), "rows": rows})
    series = {v: [r for r in rows if r["variant"] == v and "tokens_per_s" in r] for v in variants}
    panels = [
        {"xlabel": "context length T", "ylabel": "tokens / s", "logx": True,
         "series": {v: ([r["T"] for r in rs], [r["tokens_per_s"] for r in rs]) for v, rs in series.items()}},
    ]
    if device.type == "cuda":
        panels.append({"xlabel": "context length T", "ylabel": "peak memory (GiB)", "logx": True,
                       "series": {v: ([r["T"] for r in rs], [r["peak_gib"] for r in rs]) for v, rs in series.items()}})
    plot_panels(out.with_suffix(".png"), f"training, {args.size}, {args.tokens} tokens/batch", panels)
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
