"""The second pass's intra-chunk mixing matrix (and, in backward, the first pass's one for dq/dk).

For every chunk and query head, P [BT, BT] with, for c0 <= j <= t in the chunk,
    P[t, j] = sum_m a_t[m] * s_j[m] * exp(Gl_t[m] - Gl_j[m])      (0 above the diagonal),
where a = softmax(A1) (forward: o = P @ v + ...; backward: dv = P^T @ dO + ...) or a = dA1 (backward:
dq = scale * (P @ k + ...), dk = scale * (P^T @ q + ...)). A program computes BC rows: earlier sub-blocks factor
the decay through the sub-block's first row r (both factors <= 1), and so does the diagonal sub-block while its decay
span allows (utils.FACTOR_SPAN); past it, the diagonal sub-block is taken pairwise.
Stored in float32 as [TT, HQ, BT] (row t, column j - c0).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gsa.ops.triton.utils import (
    launch,
    BC, BT, Chunks, block, launch_options, decayed_rows, factor_span, load_row, load_rows, masked_softmax,
    pairwise_decay, sub_block_program, sub_block_span, tiles_grid,
)


@triton.jit
def chunk_gsa_fwd_kernel_p(A, s, gl, P, cu_seqlens, chunk_indices, H, HQ, M, span_max,
                           BT: tl.constexpr, BC: tl.constexpr, BM: tl.constexpr, SOFTMAX: tl.constexpr,
                           PREC: tl.constexpr):
    i_c, i_i, i_hq, i_h, t0, eos, ti = sub_block_program(cu_seqlens, chunk_indices, H, HQ, BT, BC)
    if ti >= eos:
        return
    o_t = t0 + tl.arange(0, BT)
    o_i = ti + tl.arange(0, BC)
    o_m = tl.arange(0, BM)
    m_t, m_i, m_m = o_t < eos, o_i < eos, o_m < M

    b_a = load_rows(A + i_hq * M, o_i, m_i, HQ * M, o_m, m_m)  # [BC, BM]
    if SOFTMAX:
        b_a = masked_softmax(b_a, m_i[:, None] & m_m[None, :])
    b_gt = load_rows(gl + i_h * M, o_t, m_t, H * M, o_m, m_m)  # [BT, BM]
    b_gi = load_rows(gl + i_h * M, o_i, m_i, H * M, o_m, m_m)  # [BC, BM]
    b_gr = load_row(gl + i_h * M, ti, H * M, o_m, m_m)  # [BM]
    b_st = load_rows(s + i_h * M, o_t, m_t, H * M, o_m, m_m).to(tl.float32)  # [BT, BM]
    # the diagonal sub-block joins the earlier ones' dot while its decay span allows (utils.FACTOR_SPAN)
    factored = sub_block_span(b_gi, b_gr) < span_max

    o_c = tl.arange(0, BT)
    m_j = (o_c < i_i * BC + tl.where(factored, BC, 0)) & m_t
    b_sd = decayed_rows(b_st, b_gt, b_gr, m_j)  # [BT, BM]
    b_ai = tl.where(m_i[:, None], b_a * tl.exp(b_gi - b_gr[None, :]), 0.0)
    b_p = tl.dot(b_ai, tl.trans(b_sd), input_precision=PREC)  # [BC, BT]
    b_p = tl.where(o_c[None, :] <= (o_i - t0)[:, None], b_p, 0.0)  # causal inside the diagonal sub-block

    p_p = P + o_i[:, None].to(tl.int64) * HQ * BT + i_hq * BT
    if factored:
        tl.store(p_p + o_c[None, :], b_p, mask=m_i[:, None])
    else:  # the diagonal sub-block pairwise
        b_si = load_rows(s + i_h * M, o_i, m_i, H * M, o_m, m_m).to(tl.float32)  # [BC, BM]
        b_d = pairwise_decay(b_gi, o_i, m_i)  # [BC (t), BC (j), BM]
        b_pd = tl.sum(b_a[:, None, :] * b_si[None, :, :] * b_d, axis=2)  # [BC, BC]
        # two stores to disjoint columns: stores of one program from different threads are not ordered
        m_off = (o_c < i_i * BC) | (o_c >= i_i * BC + BC)
        tl.store(p_p + o_c[None, :], b_p, mask=m_i[:, None] & m_off[None, :])
        tl.store(p_p + i_i * BC + tl.arange(0, BC)[None, :], b_pd, mask=m_i[:, None])


def chunk_p(A: torch.Tensor, s: torch.Tensor, gl: torch.Tensor, chunks: Chunks, softmax: bool,
            prec: str) -> torch.Tensor:
    """P [TT, HQ, BT] float32 from A [TT, HQ, M] (A1 with `softmax`, else dA1) and s/gl [TT, H, M]."""
    TT, HQ, M = A.shape
    H = s.shape[1]
    P = torch.empty(TT, HQ, BT, dtype=torch.float32, device=A.device)
    grid = tiles_grid(BT // BC, HQ, chunks.NT)
    launch(chunk_gsa_fwd_kernel_p, grid)(A, s, gl, P, chunks.cu_seqlens, chunks.indices, H, HQ, M, factor_span(),
                                 BT=BT, BC=BC,
                                 BM=block(M, 128), SOFTMAX=softmax, PREC=prec, **launch_options("p"))
    return P
