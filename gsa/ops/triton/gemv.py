"""Matrix products with few rows (decode steps: M = batch <= 32 tokens), for the projections cuBLAS runs below the
weight-streaming rate at decode time (BENCHMARKS.md, session 11 profile of GSA-1.3B at batch 1: gate|up at 2.48
TB/s, but o_proj and down_proj with its split-K reduce at 1.96 TB/s).

y [M, N] = x [M, K] @ W[N, K]^T, one program per BN = 16 output columns streaming its [16, K] slice of W (128
programs for N = 2048), float32 accumulation. With `swiglu`, x is the MLP's gate|up product [M, 2K] and the kernel
reads silu(gate) * up (in float32, rounded once to W's dtype) as it goes, so the element-wise SwiGLU kernel before
down_proj goes away too. Opt-in and untimed (gsa.nn.fused.TRITON_GEMV); eager and under torch.compile (custom op).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_ROWS = 32  # beyond this cuBLAS's tiles are the right tool
BN, BK = 16, 256


@triton.jit
def small_m_linear_kernel(x, w, y, M, N, K, stride_x, stride_y, BM: tl.constexpr, BN: tl.constexpr,
                          BK: tl.constexpr, SWIGLU: tl.constexpr, PREC: tl.constexpr):
    i_n = tl.program_id(0)
    o_m = tl.arange(0, BM)
    o_n = i_n * BN + tl.arange(0, BN)
    m_m, m_n = o_m < M, o_n < N
    b_acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k0 in range(0, K, BK):
        o_k = k0 + tl.arange(0, BK)
        m_k = o_k < K
        p_x = x + o_m[:, None].to(tl.int64) * stride_x + o_k[None, :]
        m_x = m_m[:, None] & m_k[None, :]
        if SWIGLU:
            b_g = tl.load(p_x, mask=m_x, other=0).to(tl.float32)
            b_u = tl.load(p_x + K, mask=m_x, other=0).to(tl.float32)
            b_x = (b_g * tl.sigmoid(b_g) * b_u).to(w.dtype.element_ty)
        else:
            b_x = tl.load(p_x, mask=m_x, other=0).to(w.dtype.element_ty)
        b_w = tl.load(w + o_n[:, None].to(tl.int64) * K + o_k[None, :], mask=m_n[:, None] & m_k[None, :], other=0)
        b_acc += tl.dot(b_x, tl.trans(b_w), input_precision=PREC)
    p_y = y + o_m[:, None].to(tl.int64) * stride_y + o_n[None, :]
    tl.store(p_y, b_acc.to(y.dtype.element_ty), mask=m_m[:, None] & m_n[None, :])


def _launch(x: torch.Tensor, w: torch.Tensor, swiglu: bool) -> torch.Tensor:
    N, K = w.shape
    x2 = x.reshape(-1, x.shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    M = x2.shape[0]
    y = x.new_empty(M, N)
    BM = max(16, triton.next_power_of_2(M))
    small_m_linear_kernel[(triton.cdiv(N, BN),)](
        x2, w, y, M, N, K, x2.stride(0), y.stride(0), BM=BM, BN=BN, BK=BK, SWIGLU=swiglu,
        PREC="ieee" if w.dtype == torch.float32 else "tf32", num_warps=4, num_stages=4)
    return y.view(*x.shape[:-1], N)


@torch.library.custom_op("gsa::small_m_linear", mutates_args=())
def small_m_linear_op(x: torch.Tensor, w: torch.Tensor, swiglu: bool) -> torch.Tensor:
    return _launch(x, w, swiglu)


@small_m_linear_op.register_fake
def _(x, w, swiglu):
    return x.new_empty(*x.shape[:-1], w.shape[0])


def small_m_linear(x: torch.Tensor, w: torch.Tensor, swiglu: bool = False) -> torch.Tensor:
    """x [..., K] (with swiglu: the gate|up product [..., 2K]) and W [N, K] (contiguous, an nn.Linear weight) ->
    [..., N] in x's dtype, for at most MAX_ROWS rows; no autograd (decoding)."""
    K = w.shape[1]
    if x.shape[-1] != (2 * K if swiglu else K):
        raise ValueError(f"small_m_linear: x's last dim must be {2 * K if swiglu else K} for W {tuple(w.shape)} "
                         f"(swiglu={swiglu}), got {tuple(x.shape)}")
    if x.numel() // x.shape[-1] > MAX_ROWS:
        raise ValueError(f"small_m_linear: at most {MAX_ROWS} rows, got {x.numel() // x.shape[-1]}")
    if not w.is_contiguous():
        raise ValueError("small_m_linear: W must be contiguous")
    if torch.compiler.is_compiling():
        return small_m_linear_op(x, w, swiglu)
    return _launch(x, w, swiglu)
