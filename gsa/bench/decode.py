"""Decoding latency after a long prompt: GSA's constant-size state vs a Transformer's KV cache (Figure 4c).

For each (model, batch, prefix): time to first token (the prefill of the prefix) and ms per generated token
(median over `--new-tokens` steps after a warm-up, greedy). GSA decodes with `gsa.models.StaticDecoder` (owned
float32 states, fused recurrent kernel, compiled step captured in a CUDA graph); the Transformer with
transformers' static cache and `torch.compile` of its decode step. Also reports GSA's state bytes per sequence
against the KV cache's. bf16 weights. Writes JSON and a PNG.

    python -m gsa.bench.decode                                    # 1.3B, batch 1 and 32, prefixes 2K/8K/32K
    python -m gsa.bench.decode --size tiny --prefixes 32,64 --batches 1,2 --new-tokens 4   # a toy run (CPU)
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from pathlib import Path

from gsa.bench.train import SIZES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="1.3b", choices=sorted(SIZES), help="model size (default 1.3b)")
    p.add_argument("--models", default="gsa,llama",
                   help="comma-separated: gsa, gsa-unfused (separate q/k/v/f and gate/up products), llama "
                        "(default gsa,llama)")
    p.add_argument("--prefixes", default="2048,8192,32768", help="prompt lengths (default 2K, 8K, 32K)")
    p.add_argument("--batches", default="1,32", help="batch sizes (default 1,32)")
    p.add_argument("--new-tokens", type=int, default=64, help="timed decode steps (default 64)")
    p.add_argument("--no-compile", action="store_true", help="eager decode steps for both models")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile mode of GSA's step, e.g. max-autotune-no-cudagraphs (default: the default mode)")
    p.add_argument("--profile", action="store_true",
                   help="print the per-kernel time of a GSA decode step (CUDA; first batch and prefix)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default runs/bench/<gpu>/decode.json)")
    p.add_argument("--merge", default=None, metavar="A.json,B.json",
                   help="run nothing: join the rows of earlier runs (say, one per model, so a time-out keeps the "
                        "other) into --out and its plot")


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


_DECODERS: dict = {}


def bench_gsa(model, B: int, prefix: int, new: int, compile: bool, device, fuse: bool = True,
              profile: bool = False, compile_mode: str | None = None) -> dict:
    import torch

    from gsa.models import StaticDecoder

    cuda = device.type == "cuda"
    key = (id(model), B, compile)
    if key not in _DECODERS:  # one decoder (one compile and graph capture) per batch size, reused across prefixes
        _DECODERS.clear()
        mode = (compile_mode or True) if compile and cuda else False
        _DECODERS[key] = StaticDecoder(model, B, compile=mode, cuda_graph=compile and cuda, fuse=fuse)
    dec = _DECODERS[key]
    ids = torch.randint(0, model.config.vocab_size, (B, prefix), device=device)
    dec.prefill(ids)  # warm-up: kernels compiled for these shapes
    ttft = _timed(lambda: dec.prefill(ids), device)
    token = ids[:, -1]
    for _ in range(3):  # warm-up (and CUDA-graph capture)
        dec.step(token)
    times = []
    for _ in range(new):
        times.append(_timed(lambda: dec.step(token), device))
    row = {"ttft_ms": ttft * 1e3, "ms_per_token": statistics.median(times) * 1e3,
           "state_bytes_per_seq": dec.state_bytes // B}
    if profile and cuda:
        from gsa.bench.common import profile_kernels

        row["profile"] = profile_kernels(lambda: dec.step(token), 20, f"one decode step, batch {B}, prefix {prefix}")
    return row


def bench_llama(model, B: int, prefix: int, new: int, compile: bool, device) -> dict:
    import torch
    from transformers import StaticCache

    cfg = model.config
    ids = torch.randint(0, cfg.vocab_size, (B, prefix), device=device)
    cache = StaticCache(config=cfg, max_cache_len=prefix + new + 8)
    step = torch.compile(model, fullgraph=True, mode="reduce-overhead") if compile else model

    def prefill():
        cache.reset()
        return model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1)

    prefill()
    ttft = _timed(prefill, device)
    token = ids[:, -1:]
    pos = prefix
    times = []
    for i in range(new + 3):
        position = torch.full((B, 1), pos, device=device, dtype=torch.long)
        cache_position = torch.tensor([pos], device=device)
        t = _timed(lambda: step(token, past_key_values=cache, position_ids=position, cache_position=cache_position,
                                use_cache=True), device)
        pos += 1
        if i >= 3:
            times.append(t)
    kv = 2 * cfg.num_hidden_layers * (prefix + new) * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads)
    return {"ttft_ms": ttft * 1e3, "ms_per_token": statistics.median(times) * 1e3,
            "state_bytes_per_seq": kv * 2}  # bf16 keys and values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gsa bench decode", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


def _report(rows: list[dict], meta: dict, out: Path) -> None:
    """Print the table, write {**meta, "rows": rows} to `out` and a plot of ms/token by prefix (a panel per batch)
    next to it."""
    from gsa.bench.common import plot_panels, print_table, write_json

    print(f"\ndecoding: {meta['size']}, {meta['machine']}")
    print_table(rows, [("model", "model", "s"), ("batch", "batch", "d"), ("prefix", "prefix", "d"),
                       ("ttft_ms", "TTFT ms", ".1f"), ("ms_per_token", "ms/token", ".3f"),
                       ("state_bytes_per_seq", "state B/seq", ",d"), ("error", "error", "s")])
    write_json(out, {**meta, "rows": rows})
    panels = []
    for B in sorted({r["batch"] for r in rows}):
        series = {}
        for name in dict.fromkeys(r["model"] for r in rows):
            rs = [r for r in rows if r["model"] == name and r["batch"] == B and "ms_per_token" in r]
            series[name] = ([r["prefix"] for r in rs], [r["ms_per_token"] for r in rs])
        panels.append({"xlabel": f"prefix length (batch {B})", "ylabel": "ms / token", "logx": True, "ymin": 0,
                       "series": series})
    plot_panels(out.with_suffix(".png"), f"decoding, {meta['size']}", panels)
    print(f"wrote {out} and {out.with_suffix('.png')}")


def _merge(paths: str, out: Path | None) -> int:
    """Join earlier runs' JSON (same size and machine) into one table, JSON and plot."""
    files = [p for p in paths.split(",") if p]
    runs = [json.loads(Path(p).read_text()) for p in files]
    if not runs or out is None:
        raise SystemExit("gsa bench decode --merge needs JSON files and --out")
    if len({(r["size"], json.dumps(r["machine"], sort_keys=True)) for r in runs}) != 1:
        raise SystemExit("gsa bench decode --merge: the runs differ in model size or machine")
    meta = {k: v for k, v in runs[0].items() if k != "rows"}
    meta["merged_from"] = files
    _report([row for r in runs for row in r["rows"]], meta, out)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.merge:
        return _merge(args.merge, args.out)
    import torch
    from tqdm import tqdm

    from gsa.bench.common import default_path, machine, pick_device, release_memory
    from gsa.bench.train import build

    device = pick_device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    models = [m for m in args.models.split(",") if m]
    if set(models) - {"gsa", "gsa-unfused", "llama"}:
        raise SystemExit(f"gsa bench decode: --models takes gsa, gsa-unfused and/or llama, got {args.models!r}")
    prefixes = [int(x) for x in args.prefixes.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    rows = []
    for name in models:
        model = build(name.removesuffix("-unfused"), args.size, max(prefixes) + args.new_tokens + 8, device,
                      dtype).eval()
        profiled = False
        for B in batches:
            for prefix in tqdm(prefixes, desc=f"{name} batch {B}"):
                row = {"model": name, "batch": B, "prefix": prefix}
                try:
                    with torch.no_grad():
                        if name == "llama":
                            row.update(bench_llama(model, B, prefix, args.new_tokens, not args.no_compile, device))
                        else:
                            row.update(bench_gsa(model, B, prefix, args.new_tokens, not args.no_compile, device,
                                                 fuse=name == "gsa", profile=args.profile and not profiled,
                                                 compile_mode=args.compile_mode))
                            profiled = True
                except torch.OutOfMemoryError:
                    row["error"] = "out of memory"
                except Exception as e:  # one failing row (a compile error, say) must not lose the others
                    row["error"] = f"{type(e).__name__}: {e}"[:300]
                release_memory(device)
                rows.append(row)
        _DECODERS.clear()
        del model
        gc.collect()
    out = args.out or default_path(device, "decode.json")
    _report(rows, {"benchmark": "decode", "size": args.size, "machine": machine(device),
                   "compile_mode": args.compile_mode}, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
