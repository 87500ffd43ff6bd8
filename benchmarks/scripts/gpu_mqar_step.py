"""Where an MQAR training step's time goes (issue 4): wall time a step against the GPU's kernel time.

The 2-layer d = 128 MQAR models ran ~30 steps/s alone on an H100 (session 10), far from what their FLOPs need: if
the kernel time a step is much less than the wall time, the step is bound by the host (Python, launches, the data
thread), and CUDA graphs or a larger batch a step are the lever; if not, the kernels are.

    python benchmarks/scripts/gpu_mqar_step.py [--config configs/mqar-gsa-d128.toml] [override ...]

Prints one row per (sequence length, pairs) of the training mix: ms a step (synchronised, median of 20 after 10
warm-up steps), kernel ms a step (torch.profiler, CUDA activity summed), kernels a step, and the data batch's
generation ms on the host. Same model, optimizer and loss as the trainer (bf16 autocast, AdamW, sparse logits).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gsa.data import mqar_batch
from gsa.train.config import load_config
from gsa.train.model import build_model, labelled_positions_loss, param_groups


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/mqar-gsa-d128.toml")
    p.add_argument("--device", default="cuda", help="cpu: a smoke test of the script (kernel columns then 0)")
    p.add_argument("--top", type=int, default=0, help="also list the N kernels that take longest, per config")
    p.add_argument("--only", default="", help="only these seq:pairs configs, e.g. 256:64,64:4")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    cfg = load_config(args.config, args.overrides)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    model = build_model(cfg.model, cfg.data.mqar_vocab_size).to(dev)
    opt = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr, fused=dev.type == "cuda")
    mbs = cfg.train.micro_batch_size
    print(f"{args.config} {' '.join(args.overrides)}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M "
          f"parameters, {mbs} sequences a step")
    print("| seq | pairs | ms / step | kernel ms / step | kernels / step | batch generation ms |")
    print("| --- | --- | --- | --- | --- | --- |")

    def step(batch):
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = labelled_positions_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    configs = sorted(set(zip(cfg.data.mqar_train_seq_lens, cfg.data.mqar_train_pairs)))
    if args.only:
        configs = [tuple(int(v) for v in c.split(":")) for c in args.only.split(",")]
    for T, D in configs:
        t0 = time.perf_counter()
        host = mqar_batch(mbs, T, D, seed=[0, T, D])
        gen_ms = (time.perf_counter() - t0) * 1e3
        batch = {k: v.to(dev) for k, v in host.items()}
        for _ in range(10):
            step(batch)
        sync()
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            step(batch)
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
        act = torch.profiler.ProfilerActivity
        with torch.profiler.profile(activities=[act.CUDA if dev.type == "cuda" else act.CPU]) as prof:
            for _ in range(5):
                step(batch)
            sync()
        events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        kernel_ms = sum(e.time_range.elapsed_us() for e in events) / 1e3 / 5
        print(f"| {T} | {D} | {statistics.median(times):.2f} | {kernel_ms:.2f} | {len(events) / 5:.0f} | "
              f"{gen_ms:.2f} |", flush=True)
        if args.top:
            per: dict[str, list[float]] = {}
            for e in events:
                per.setdefault(e.name, []).append(e.time_range.elapsed_us())
            for name, us in sorted(per.items(), key=lambda kv: -sum(kv[1]))[: args.top]:
                print(f"    {sum(us) / 5:9.1f} us x{len(us) / 5:<4g} {name[:110]}")


if __name__ == "__main__":
    main()
