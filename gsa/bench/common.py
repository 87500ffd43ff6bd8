"""Pieces every benchmark shares: where results go, the machine description, JSON and plots."""

from __future__ import annotations

import json
import platform
import re
from pathlib import Path

# `gsa bench` writes here by default (untracked); the recipes in benchmarks/recipes write the results page's
# benchmarks/results/<gpu>/ instead.
RESULTS = Path("runs") / "bench"


def gpu_slug(name: str) -> str:
    """A short folder name for a GPU name: 'NVIDIA H100 80GB HBM3' -> 'h100'."""
    m = re.search(r"(H100|H200|A100|L40S?|B200|GB200|RTX ?\d+)", name, re.I)
    return (m.group(1) if m else name).lower().replace(" ", "")


def device_slug(device) -> str:
    """A short folder name for the machine: h100, h200, a100, ... or cpu."""
    import torch

    return gpu_slug(torch.cuda.get_device_name(device)) if device.type == "cuda" else "cpu"


def pick_device(name: str | None):
    """torch.device(name), or cuda when available and name is None."""
    import torch

    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def release_memory(device) -> None:
    """Collect dropped models and optimizers and give the CUDA caching allocator's blocks back, so the next row's
    peak memory is its own."""
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def machine(device) -> dict:
    """Versions and hardware, recorded beside every result."""
    import torch
    import transformers

    info = {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        try:
            import triton

            info["triton"] = triton.__version__
        except ImportError:
            pass
    else:
        info["cpu"] = platform.processor() or platform.machine()
        info["threads"] = torch.get_num_threads()
    return info


def default_path(device, name: str) -> Path:
    return RESULTS / device_slug(device) / name


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


def plot_panels(path: Path, title: str, panels: list[dict]) -> None:
    """One PNG with a panel per dict: {"xlabel", "ylabel", "series": {label: (xs, ys)}, "logx": bool, "ymin":
    float (optional: where the y axis starts)}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for label, (xs, ys) in panel["series"].items():
            ax.plot(xs, ys, marker="o", label=label)
        ax.set_xlabel(panel["xlabel"])
        ax.set_ylabel(panel["ylabel"])
        if panel.get("logx"):
            ax.set_xscale("log", base=2)
        if "ymin" in panel:
            ax.set_ylim(bottom=panel["ymin"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """columns: (key, header, format spec). Missing values print as '-'."""
    widths = [max(len(h), 10) for _, h, _ in columns]
    print("  ".join(h.rjust(w) for (_, h, _), w in zip(columns, widths)))
    for row in rows:
        cells = []
        for (key, _, fmt), w in zip(columns, widths):
            v = row.get(key)
            cells.append(("-" if v is None else format(v, fmt)).rjust(w))
        print("  ".join(cells))


def profile_kernels(fn, repeats: int, title: str, top: int = 24, quiet: bool = False) -> list[dict]:
    """Per-kernel device time (us per call of fn, averaged over `repeats`), largest first; prints a table unless
    `quiet`.

    fn runs once before profiling (warm-up). Kernels replayed from a CUDA graph are seen too (CUPTI records them).
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        if t > 0:
            rows.append((t / repeats, e.count / repeats, e.key))
    rows.sort(reverse=True)
    if not quiet:
        print(f"per-kernel time, {title}:")
        for t, n, key in rows[:top]:
            print(f"  {t:9.1f} us  x{n:<5g} {key[:90]}")
        print(f"  {sum(r[0] for r in rows):9.1f} us  total, {sum(r[1] for r in rows):g} kernels")
    return [dict(us=t, calls=n, kernel=key) for t, n, key in rows]


def fwd_bwd_step(fwd, x: dict, do):
    """A forward+backward of fwd(x) with cotangent do that starts from cleared gradients, as do_bench's grad_to_none
    times it: profiled with gradients left in place, autograd would add each new one into the old (one extra
    elementwise kernel per input) and the profile would show kernels the timing never ran."""
    import torch

    def step():
        for t in x.values():
            t.grad = None
        torch.autograd.backward(fwd(x), do)

    return step


def device_ms(kernels: list[dict]) -> float:
    """The summed device time (ms) of profile_kernels' rows: the GPU's busy time for one call, without the host's
    launch overhead and the gaps it leaves (which a wall-clock time of one op includes, and which a model step
    hides while the host runs ahead of the GPU)."""
    return sum(k["us"] for k in kernels) / 1e3


def extra_bytes(step) -> int:
    """The peak CUDA memory one call of step() allocates above what is allocated before it, in bytes."""
    import torch

    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def time_fwd_bwd(fwd, x: dict, do) -> dict:
    """One op on CUDA: first call (compile + run of a forward+backward, s), forward and forward+backward medians of
    triton.testing.do_bench (ms, warm-up excluded), and the extra memory of a forward+backward (MiB above what is
    allocated before it). fwd(x) -> output; x: the inputs by name (gradients cleared after); do: the cotangent."""
    import time

    import torch
    from triton.testing import do_bench

    def step():
        torch.autograd.backward(fwd(x), do)

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    step()
    torch.cuda.synchronize()
    r = {"first_call_s": time.perf_counter() - t0}
    with torch.no_grad():
        r["fwd_ms"] = do_bench(lambda: fwd(x), return_mode="median")
    r["fwd_bwd_ms"] = do_bench(step, grad_to_none=list(x.values()), return_mode="median")
    for t in x.values():
        t.grad = None
    r["extra_mib"] = extra_bytes(step) / 2**20
    for t in x.values():
        t.grad = None
    return r
