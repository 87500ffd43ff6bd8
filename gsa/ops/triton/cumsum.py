"""Gate sums over time: the chunk-local cumulative log gate (forward) and the reverse cumulative sum that turns
dG into dg (backward, GSA_SPEC.md section 3)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gsa.ops.triton.utils import BT, Chunks, block, chunk_bounds, chunk_warps, load_rows, sequence_bounds


@triton.jit
def chunk_gsa_fwd_kernel_cumsum(g, gl, cu_seqlens, chunk_indices, H, M,
                                BT: tl.constexpr, BM: tl.constexpr):
    i_c, i_h = tl.program_id(0), tl.program_id(1)
    t0, eos = chunk_bounds(cu_seqlens, chunk_indices, i_c, BT)
    o_t = t0 + tl.arange(0, BT)
    o_m = tl.arange(0, BM)
    m_t, m_m = o_t < eos, o_m < M
    b_g = load_rows(g + i_h * M, o_t, m_t, H * M, o_m, m_m).to(tl.float32)  # [BT, BM]
    p_gl = gl + o_t[:, None].to(tl.int64) * H * M + i_h * M + o_m[None, :]
    tl.store(p_gl, tl.cumsum(b_g, axis=0), mask=m_t[:, None] & m_m[None, :])


@triton.jit
def chunk_gsa_bwd_kernel_dg(dG, dgt, dg, cu_seqlens, H, M, BT: tl.constexpr,
                            BM: tl.constexpr, USE_DGT: tl.constexpr):
    i_nh = tl.program_id(0)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = sequence_bounds(cu_seqlens, i_n)
    NTn = tl.cdiv(eos - bos, BT)
    o_m = tl.arange(0, BM)
    m_m = o_m < M
    b_c = tl.zeros([BM], dtype=tl.float32)  # sum of dG over all later steps
    if USE_DGT:
        b_c += tl.load(dgt + i_nh * M + o_m, mask=m_m, other=0)
    for i in range(NTn):
        i_t = NTn - 1 - i
        o_t = bos + i_t * BT + tl.arange(0, BT)
        m_t = o_t < eos
        b_x = load_rows(dG + i_h * M, o_t, m_t, H * M, o_m, m_m)  # [BT, BM]
        b_s = tl.sum(b_x, 0)
        b_r = b_c[None, :] + b_s[None, :] - tl.cumsum(b_x, axis=0) + b_x  # sum over i >= t
        p_dg = dg + o_t[:, None].to(tl.int64) * H * M + i_h * M + o_m[None, :]
        tl.store(p_dg, b_r.to(dg.dtype.element_ty), mask=m_t[:, None] & m_m[None, :])
        b_c += b_s


def chunk_local_cumsum(g: torch.Tensor, chunks: Chunks) -> torch.Tensor:
    """g: [TT, H, M] log gates -> Gl [TT, H, M] float32, the cumulative sum restarted at every chunk."""
    TT, H, M = g.shape
    gl = torch.empty(TT, H, M, dtype=torch.float32, device=g.device)
    chunk_gsa_fwd_kernel_cumsum[(chunks.NT, H)](g, gl, chunks.cu_seqlens, chunks.indices, H=H, M=M, BT=BT,
                                                BM=block(M, 128), num_warps=chunk_warps())
    return gl


def reverse_cumsum_dg(dG: torch.Tensor, dgt: torch.Tensor | None, chunks: Chunks, dtype: torch.dtype) -> torch.Tensor:
    """dG: [TT, H, M] float32 -> dg [TT, H, M] in `dtype`: dg_t = sum_{i >= t} dG_i + dgt (per sequence).

    dgt: [N, H, M] float32, the final-state term added at each sequence's last step (or None)."""
    TT, H, M = dG.shape
    dg = torch.empty(TT, H, M, dtype=dtype, device=dG.device)
    chunk_gsa_bwd_kernel_dg[(chunks.N * H,)](dG, dgt, dg, chunks.cu_seqlens, H=H, M=M, BT=BT, BM=block(M, 128),
                                             USE_DGT=dgt is not None, num_warps=chunk_warps())
    return dg
