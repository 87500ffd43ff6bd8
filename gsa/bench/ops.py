"""Kernel benchmark: GSA (triton) vs causal SDPA vs the reference library (fla-core `chunk_gsa`, when installed).

One run prints one table: forward and forward+backward times (median of triton.testing.do_bench, warm-up and
first-call compilation excluded and reported separately), achieved TFLOP/s and GB/s, the floor (minimum bytes
over the measured copy bandwidth, FLOPs over the measured bf16 matrix rate, whichever is larger), extra memory
of forward+backward, and the decode step. Writes JSON under runs/bench/<gpu>/ (or --out).

    python -m gsa.bench.ops                      # default shapes, bf16
    python -m gsa.bench.ops --shapes 1.3b --no-fla --out /tmp/ops.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gsa.bench.common import RESULTS, gpu_slug, time_fwd_bwd
from gsa.bench.cost import Cost, ceilings

# name: (B, T, HQ, H, K, V, M)
SHAPES = {
    "1.3b": (8, 2048, 4, 4, 512, 512, 64),
    "1.3b-long": (1, 16384, 4, 4, 512, 512, 64),
    "grouped": (8, 2048, 32, 8, 128, 128, 64),
    "small-head": (8, 2048, 16, 16, 64, 64, 32),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shapes", default="1.3b,grouped,small-head",
                   help=f"comma-separated shape names from {sorted(SHAPES)} (default: 1.3b,grouped,small-head)")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"], help="input dtype (default bf16)")
    p.add_argument("--fla-shapes", default="none",
                   help="shapes on which to time fla-core too ('all', 'none' or names; its first call autotunes "
                        "for minutes a shape, over 5 min seen on an H100; default none)")
    p.add_argument("--profile", action="store_true",
                   help="also print each kernel's time in one forward+backward of the first shape")
    p.add_argument("--decode-batches", default="1,32", help="batch sizes of the decode-step benchmark (1.3b heads)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path (default runs/bench/<gpu>/ops.json)")


def _inputs(torch, shape, dtype, requires_grad):
    B, T, HQ, H, K, V, M = shape
    F = torch.nn.functional
    g = (F.logsigmoid(torch.randn(B, T, H, M, device="cuda")) / 8)
    x = dict(
        q=torch.randn(B, T, HQ, K, device="cuda", dtype=dtype),
        k=torch.randn(B, T, H, K, device="cuda", dtype=dtype),
        v=torch.randn(B, T, H, V, device="cuda", dtype=dtype),
        s=(1 - g.exp()).to(dtype),
        g=g.to(dtype),
    )
    for t in x.values():
        t.requires_grad_(requires_grad)
    return x


def _bench_impl(name, fwd, x, do):
    return {"impl": name, **time_fwd_bwd(fwd, x, do)}


def _decode(torch, do_bench, batch, dtype):
    from gsa.ops.triton import fused_recurrent_gsa

    B, T, HQ, H, K, V, M = SHAPES["1.3b"]
    x = _inputs(torch, (batch, 1, HQ, H, K, V, M), dtype, False)
    hk = torch.randn(batch, H, K, M, device="cuda")
    hv = torch.randn(batch, H, M, V, device="cuda")

    def step():
        return fused_recurrent_gsa(x["q"], x["k"], x["v"], x["s"], x["g"], K**-0.5, (hk, hv), True, inplace=True)[0]

    eager = do_bench(step, return_mode="median")
    step()
    graph = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        step()
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(graph):
        step()
    graphed = do_bench(graph.replay, return_mode="median")
    state_bytes = 2 * batch * H * M * (K + V) * 4  # read and write both states
    return {"batch": batch, "eager_us": eager * 1e3, "graph_us": graphed * 1e3, "state_bytes": state_bytes}


def _profile(torch, shape, dtype):
    """Per-kernel device time (us) of one forward+backward, averaged over 5 runs, largest first."""
    from gsa.bench.common import fwd_bwd_step, profile_kernels
    from gsa.ops.triton import chunk_gsa

    B, T, HQ, H, K, V, M = shape
    x = _inputs(torch, shape, dtype, True)
    do = torch.randn(B, T, HQ, V, device="cuda", dtype=dtype)
    def fwd(x):
        return chunk_gsa(x["q"], x["k"], x["v"], x["s"], x["g"], K**-0.5, None, False, None)[0]

    return profile_kernels(fwd_bwd_step(fwd, x, do), 5, f"one forward+backward, shape {shape}")


def run(args: argparse.Namespace) -> int:
    import torch
    from triton.testing import do_bench

    from gsa.ops.triton import chunk_gsa

    if not torch.cuda.is_available():
        raise SystemExit("gsa bench ops: needs a CUDA device")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    el = 2
    gpu = torch.cuda.get_device_name()
    try:
        from fla.ops.gsa import chunk_gsa as fla_chunk_gsa
    except ImportError:
        fla_chunk_gsa = None
    names = [n.strip() for n in args.shapes.split(",") if n.strip()]
    fla_names = set(names if args.fla_shapes == "all" else [] if args.fla_shapes == "none"
                    else args.fla_shapes.split(","))
    bw, mm = ceilings(torch, do_bench)
    print(f"# {gpu}: copy {bw / 1e12:.2f} TB/s (read + write), bf16 matmul {mm / 1e12:.0f} TFLOP/s; "
          f"torch {torch.__version__}, fla-core {'yes' if fla_chunk_gsa else 'not installed'}", flush=True)

    rows = []
    for name in names:
        shape = SHAPES[name]
        B, T, HQ, H, K, V, M = shape
        scale = K**-0.5
        cost = Cost.of(*shape, el=el)
        flops_f, bytes_f, flops_fb, bytes_fb = cost.flops_fwd, cost.bytes_fwd, cost.flops_fwd_bwd, cost.bytes_fwd_bwd
        floors = cost.floors_ms(bw, mm)
        floor_f, floor_fb = floors["fwd"], floors["fwd_bwd"]
        x = _inputs(torch, shape, dtype, True)
        do = torch.randn(B, T, HQ, V, device="cuda", dtype=dtype)
        impls = [("gsa (ours)", lambda x: chunk_gsa(x["q"], x["k"], x["v"], x["s"], x["g"], scale, None, False,
                                                      None)[0])]
        if fla_chunk_gsa is not None and name in fla_names:
            impls.append(("fla-core chunk_gsa", lambda x: fla_chunk_gsa(x["q"], x["k"], x["v"], x["s"], x["g"],
                                                                      scale=scale)[0]))
        for impl, fwd in impls:
            r = _bench_impl(impl, fwd, x, do)
            r.update(shape=name, dims=dict(zip("B T HQ H K V M".split(), shape)), floor_fwd_ms=floor_f * 1,
                     floor_fwd_bwd_ms=floor_fb, tflops_fwd=flops_f / r["fwd_ms"] / 1e9,
                     gbps_fwd=bytes_f / r["fwd_ms"] / 1e6, tflops_fwd_bwd=flops_fb / r["fwd_bwd_ms"] / 1e9,
                     gbps_fwd_bwd=bytes_fb / r["fwd_bwd_ms"] / 1e6)
            rows.append(r)
            print(f"  {name:10s} {impl:20s} fwd {r['fwd_ms']:.3f} ms  fwd+bwd {r['fwd_bwd_ms']:.3f} ms  "
                  f"first call {r['first_call_s']:.1f} s", flush=True)
        del x, do
        # causal SDPA at the Transformer of the same width (head dim 128)
        d = HQ * K
        hs = max(1, d // 128)
        xs = {n: torch.randn(B, hs, T, 128, device="cuda", dtype=dtype, requires_grad=True) for n in "qkv"}
        dos = torch.randn(B, hs, T, 128, device="cuda", dtype=dtype)
        sdpa = torch.nn.functional.scaled_dot_product_attention
        r = _bench_impl(f"causal SDPA {hs}x128",
                        lambda x: sdpa(x["q"], x["k"], x["v"], is_causal=True), xs, dos)
        fl = 4 * B * hs * T * T * 128 / 2  # causal half of QK^T and PV
        r.update(shape=name, dims=dict(B=B, T=T, heads=hs, D=128), floor_fwd_ms=None, floor_fwd_bwd_ms=None,
                 tflops_fwd=fl / r["fwd_ms"] / 1e9, gbps_fwd=None, tflops_fwd_bwd=3.5 * fl / r["fwd_bwd_ms"] / 1e9,
                 gbps_fwd_bwd=None)
        rows.append(r)
        del xs, dos
        torch.cuda.empty_cache()

    decode = [_decode(torch, do_bench, int(b), dtype) for b in args.decode_batches.split(",") if b]
    prof = _profile(torch, SHAPES[names[0]], dtype) if args.profile else None

    print()
    print(f"GSA ops, {args.dtype}, {gpu}: median ms (do_bench); floor = max(min bytes / {bw / 1e12:.2f} TB/s, "
          f"FLOPs / {mm / 1e12:.0f} TFLOP/s)")
    hdr = f"{'shape':10s} {'impl':22s} {'fwd ms':>8s} {'floor':>7s} {'fwd+bwd':>8s} {'floor':>7s} " \
          f"{'TFLOP/s':>8s} {'GB/s':>7s} {'MiB':>7s} {'1st s':>6s}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        ff = "" if r["floor_fwd_ms"] is None else f"{r['floor_fwd_ms']:.3f}"
        fb = "" if r["floor_fwd_bwd_ms"] is None else f"{r['floor_fwd_bwd_ms']:.3f}"
        gb = "" if r["gbps_fwd_bwd"] is None else f"{r['gbps_fwd_bwd']:.0f}"
        print(f"{r['shape']:10s} {r['impl']:22s} {r['fwd_ms']:8.3f} {ff:>7s} {r['fwd_bwd_ms']:8.3f} {fb:>7s} "
              f"{r['tflops_fwd_bwd']:8.1f} {gb:>7s} {r['extra_mib']:7.0f} {r['first_call_s']:6.1f}")
    for d in decode:
        print(f"decode step B={d['batch']:<3d} (H=4, K=V=512, M=64): eager {d['eager_us']:.1f} us, "
              f"CUDA graph {d['graph_us']:.1f} us, state floor {d['state_bytes'] / bw * 1e6:.1f} us")

    out = args.out or RESULTS / gpu_slug(gpu) / "ops.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(gpu=gpu, torch=torch.__version__, dtype=args.dtype, copy_bytes_per_s=bw,
                                   bf16_flops_per_s=mm, rows=rows, decode=decode, profile=prof), indent=1))
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gsa.bench.ops", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
