"""One token's matrix-vector product y = x W^T + b for decoding, with the weights read before the wait.

At batch 1 a decode step of GSA-1.3B is ~100 products of 8-46 MB, each preceded by a small norm or element-wise
kernel. cuBLAS's products run at 1.3-2.5 TB/s there (a probe in docs/log.md, "Decoding": the small ones are bound
by their ramp-up,
not by their loop), and each starts only when the kernel before it has finished. With programmatic dependent launch
(SETTINGS.pdl) this kernel starts while the kernel before it still runs: the weights do not depend on that kernel, so
every program loads its whole [BN, K] slice of W first, and waits (`gdc_wait`) only before it reads x. A program holds
its slice in registers, one wave of programs covers ~8 MB (o_proj's whole matrix), and the products' ramp-up overlaps
the norm before them.

Only for one row of x (batch-1 decoding); `gemv_applies` says when. Float32 accumulation.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gsa.ops.triton.launch import pdl_launch, use_pdl, cdiv, next_pow2

# A program's first [BN, FIRST_K] slice of W stays in registers (sm_90, BN 8: 159 registers a thread at K 2048 and 4
# warps, 165 at K 4096 and 8 warps; no spills), three programs an SM: ~12 MB of weights requested before the wait.
# Columns beyond it are streamed after the wait in tiles of 1024. MAX_K: the widest product the decode path sends
# here (timed on the H100 up to 2048; down_proj, K 5632, stays on cuBLAS).
FIRST_K = 4096
MAX_K = 4096
BN = 8


@triton.jit
def gemv_kernel(x, w, b, y, N, K: tl.constexpr, BK: tl.constexpr, BK2: tl.constexpr, BN: tl.constexpr,
                HAS_BIAS: tl.constexpr, PDL: tl.constexpr):
    i_n = tl.program_id(0)
    o_n = i_n * BN + tl.arange(0, BN)
    o_k = tl.arange(0, BK)
    m_n, m_k = o_n < N, o_k < K
    p_w = w + o_n[:, None].to(tl.int64) * K
    # the weights first: the kernel before this one does not write them, so they may be read before the wait
    b_w = tl.load(p_w + o_k[None, :], mask=m_n[:, None] & m_k[None, :], other=0)  # [BN, BK]
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    b_y = tl.sum(b_w.to(tl.float32) * tl.load(x + o_k, mask=m_k, other=0).to(tl.float32)[None, :], 1)  # [BN]
    # columns past the first tile (K > FIRST_K), streamed after the wait
    for k0 in range(BK, K, BK2):
        o_k2 = k0 + tl.arange(0, BK2)
        m_k2 = o_k2 < K
        b_w2 = tl.load(p_w + o_k2[None, :], mask=m_n[:, None] & m_k2[None, :], other=0)
        b_y += tl.sum(b_w2.to(tl.float32) * tl.load(x + o_k2, mask=m_k2, other=0).to(tl.float32)[None, :], 1)
    if HAS_BIAS:
        b_y += tl.load(b + o_n, mask=m_n, other=0).to(tl.float32)
    tl.store(y + o_n, b_y.to(y.dtype.element_ty), mask=m_n)


def gemv_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `gemv` serves F.linear(x, weight): one row of x on a GPU with programmatic dependent launch, a
    contiguous half-precision weight of at most MAX_K columns, no autograd."""
    return (x.numel() == x.shape[-1] and x.shape[-1] <= MAX_K and weight.dtype == x.dtype
            and x.dtype in (torch.bfloat16, torch.float16) and weight.is_contiguous() and not torch.is_grad_enabled()
            and use_pdl(x.device))  # a CUDA device of sm_90 or later


def _gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    N, K = weight.shape
    x1 = x.reshape(x.shape[-1])
    if x1.stride(0) != 1:
        x1 = x1.contiguous()
    if x1.numel() != K:
        raise ValueError(f"gemv: x has {x1.numel()} values, the weight [{N}, {K}] needs {K}")
    y = x.new_empty(*x.shape[:-1], N)
    BK = min(next_pow2(K), FIRST_K)
    gemv_kernel[(cdiv(N, BN),)](x1, weight, bias, y, N, K=K, BK=BK, BK2=min(BK, 1024), BN=BN,
                                      HAS_BIAS=bias is not None, num_warps=4 if BK <= 2048 else 8,
                                      **pdl_launch(x.device))
    return y


@torch.library.custom_op("gsa::gemv", mutates_args=())
def gemv_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear(x, weight, bias) for x with one row ([..., K], numel K)."""
    return _gemv(x, weight, bias)


@gemv_op.register_fake
def _(x, weight, bias):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] with one row, weight [N, K] -> [..., N] (callers check `gemv_applies` first)."""
    if torch.compiler.is_compiling():
        return gemv_op(x, weight, bias)
    return _gemv(x, weight, bias)
