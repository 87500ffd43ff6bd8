"""Batch-1 decode products of GSA-1.3B (issue 6): cuBLAS through F.linear vs torch.mv vs a split-K Triton GEMV.

Session 12's profile: the products take 1.21 ms of a 1.51 ms decode step, at 1.95 TB/s for q|k|v|f, o_proj and
down_proj (gate|up reaches 2.48). At 2.7 TB/s they would take ~0.95 ms, enough for the 1.5 ms/token target. The
Triton GEMV tried in session 12 ran one [16, K] tile per program (128 programs for N = 2048: under one per SM, one
tile in flight each) and was 4x slower than cuBLAS. This probe times a different design before any of it enters
the library: plain FMA (no tensor cores: one row of x), split over K so that 500+ programs each stream a few
contiguous [BN, BK] tiles, partial sums in float32 reduced by a second small kernel (or stored directly when
unsplit).

Each method runs 24 products, each on its own copy of the weight (24 x 8-46 MB: the L2's 50 MB cannot serve them),
captured in one CUDA graph, as in a decode step. Prints us a product and TB/s of weight read.

    python benchmarks/scripts/gpu_gemv_probe.py
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def gemv_part_kernel(x, w, part, N, K, K_PER: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    i_n, i_k = tl.program_id(0), tl.program_id(1)
    o_n = i_n * BN + tl.arange(0, BN)
    m_n = o_n < N
    acc = tl.zeros([BN, BK], dtype=tl.float32)
    for k0 in range(i_k * K_PER, i_k * K_PER + K_PER, BK):
        o_k = k0 + tl.arange(0, BK)
        m_k = o_k < K
        b_x = tl.load(x + o_k, mask=m_k, other=0).to(tl.float32)
        b_w = tl.load(w + o_n[:, None].to(tl.int64) * K + o_k[None, :], mask=m_n[:, None] & m_k[None, :], other=0)
        acc += b_w.to(tl.float32) * b_x[None, :]
    tl.store(part + i_k * N + o_n, tl.sum(acc, 1).to(part.dtype.element_ty), mask=m_n)


@triton.jit
def reduce_parts_kernel(part, y, N, SPLIT: tl.constexpr, BN: tl.constexpr):
    o_n = tl.program_id(0) * BN + tl.arange(0, BN)
    m_n = o_n < N
    acc = tl.zeros([BN], dtype=tl.float32)
    for s in range(SPLIT):
        acc += tl.load(part + s * N + o_n, mask=m_n, other=0)
    tl.store(y + o_n, acc.to(y.dtype.element_ty), mask=m_n)


def triton_gemv(x, w, y, part, BN, BK, split, warps, stages):
    N, K = w.shape
    k_per = triton.cdiv(triton.cdiv(K, split), BK) * BK
    if split == 1:
        gemv_part_kernel[(triton.cdiv(N, BN), 1)](x, w, y, N, K, K_PER=k_per, BN=BN, BK=BK, num_warps=warps,
                                                  num_stages=stages)
        return
    gemv_part_kernel[(triton.cdiv(N, BN), split)](x, w, part, N, K, K_PER=k_per, BN=BN, BK=BK, num_warps=warps,
                                                  num_stages=stages)
    reduce_parts_kernel[(triton.cdiv(N, 1024),)](part, y, N, SPLIT=split, BN=1024)


def time_graph(fn, reps: int = 24) -> float:
    """us a product: fn(i) for i < reps captured in one graph, replayed; median of 20 replays."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for i in range(reps):
            fn(i)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(reps):
            fn(i)
    times = []
    for _ in range(20):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / reps)
    return sorted(times)[len(times) // 2]


def main() -> None:
    torch.manual_seed(0)
    dev, dt = "cuda", torch.bfloat16
    shapes = {"q|k|v|f": (6400, 2048), "o_proj": (2048, 2048), "gate|up": (11264, 2048), "down": (2048, 5632),
              "lm_head": (32000, 2048)}
    configs = [(16, 256, 1, 4, 3), (16, 256, 4, 4, 3), (8, 512, 4, 4, 3), (32, 128, 4, 4, 4), (16, 512, 8, 4, 2),
               (64, 64, 2, 4, 4), (32, 256, 8, 8, 3)]
    print("| product | N x K | MB | F.linear us (TB/s) | torch.mv us | best Triton us (TB/s) | config BN,BK,split,warps,"
          "stages | max rel. err |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, (N, K) in shapes.items():
        reps = 24 if N * K * 2 * 24 > 200e6 else 48
        ws = [torch.randn(N, K, device=dev, dtype=dt) / K**0.5 for _ in range(reps)]
        x = torch.randn(K, device=dev, dtype=dt)
        x2 = x[None]
        y = torch.empty(N, device=dev, dtype=dt)
        part = torch.empty(8, N, device=dev, dtype=torch.float32)
        mb = N * K * 2 / 1e6
        ref = [(w.float() @ x.float()) for w in ws[:2]]
        t_lin = time_graph(lambda i: torch.nn.functional.linear(x2, ws[i]), reps)
        t_mv = time_graph(lambda i: torch.mv(ws[i], x), reps)
        best = None
        for cfg in configs:
            try:
                triton_gemv(x, ws[0], y, part, *cfg)
                err = max(float(((triton_gemv(x, ws[j], y, part, *cfg), y.float())[1] - ref[j]).abs().max()
                                / ref[j].abs().max()) for j in range(2))
                t = time_graph(lambda i, cfg=cfg: triton_gemv(x, ws[i], y, part, *cfg), reps)
            except Exception as e:  # a config that does not compile is reported, not fatal
                print(f"    {name} {cfg}: {type(e).__name__}: {str(e)[:100]}")
                continue
            print(f"    {name} {cfg}: {t:.2f} us ({mb / t:.2f} TB/s), rel. err {err:.1e}")
            if best is None or t < best[0]:
                best = (t, cfg, err)
        print(f"| {name} | {N} x {K} | {mb:.1f} | {t_lin:.2f} ({mb / t_lin:.2f}) | {t_mv:.2f} ({mb / t_mv:.2f}) | "
              f"{best[0]:.2f} ({mb / best[0]:.2f}) | {best[1]} | {best[2]:.1e} |", flush=True)
        del ws


if __name__ == "__main__":
    main()
