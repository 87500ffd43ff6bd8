"""Outputs of the second pass (forward) and the query gradient of the first pass (backward).

For a query sub-block of BC rows of a chunk, slot weights a [BC, M], chunk-start state S [D, M] and values x:
    out_t = scale * ( (a_t * exp(Gl_t)) @ S^T + sum_{c0 <= j <= t} P[t, j] * x_j ),
    P[t, j] = sum_m a_t[m] * s_j[m] * exp(Gl_t[m] - Gl_j[m]).
Forward: a = softmax(A1), x = v, S = Hv^T, scale 1: out = o. Backward: a = dA1, x = k, S = Hk: out = dq.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gsa.ops.triton.utils import BC, BT, Chunks, block, load_row, load_rows, masked_softmax


@triton.jit
def chunk_gsa_fwd_kernel_o(A, s, gl, x, h, o, cu_seqlens, chunk_indices, scale,
                           H: tl.constexpr, HQ: tl.constexpr, D: tl.constexpr, M: tl.constexpr,
                           BT: tl.constexpr, BC: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr,
                           SOFTMAX: tl.constexpr, PREC: tl.constexpr):
    NC: tl.constexpr = BT // BC
    i_ci, i_hq, i_d = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_c, i_i = i_ci // NC, i_ci % NC
    i_h = i_hq // (HQ // H)
    i_n, i_t = tl.load(chunk_indices + i_c * 2), tl.load(chunk_indices + i_c * 2 + 1)
    bos = tl.load(cu_seqlens + i_n).to(tl.int64)
    eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
    t0 = bos + i_t * BT
    ti = t0 + i_i * BC
    if ti >= eos:
        return
    o_t = t0 + tl.arange(0, BT)
    o_i = ti + tl.arange(0, BC)
    o_m = tl.arange(0, BM)
    o_d = i_d * BD + tl.arange(0, BD)
    m_t, m_i, m_m, m_d = o_t < eos, o_i < eos, o_m < M, o_d < D

    b_a = load_rows(A + i_hq * M, o_i, m_i, HQ * M, o_m, m_m)  # [BC, BM]
    if SOFTMAX:
        b_a = masked_softmax(b_a, m_i[:, None] & m_m[None, :])
    b_gt = load_rows(gl + i_h * M, o_t, m_t, H * M, o_m, m_m)  # [BT, BM]
    b_gi = load_rows(gl + i_h * M, o_i, m_i, H * M, o_m, m_m)  # [BC, BM]
    b_gr = load_row(gl + i_h * M, ti, H * M, o_m, m_m)  # [BM]
    b_st = load_rows(s + i_h * M, o_t, m_t, H * M, o_m, m_m).to(tl.float32)  # [BT, BM]
    b_si = load_rows(s + i_h * M, o_i, m_i, H * M, o_m, m_m).to(tl.float32)  # [BC, BM]

    # inter-chunk: the state read with the decay since the chunk start
    p_h = h + (i_c.to(tl.int64) * H + i_h) * D * M
    b_h = load_rows(p_h, o_m, m_m, 1, o_d * M, m_d)  # [BM, BD]
    b_o = tl.dot(b_a * tl.exp(b_gi), b_h, input_precision=PREC)  # [BC, BD]
    # earlier sub-blocks, the decay factored through the sub-block's first row r
    m_j = (tl.arange(0, BT) < i_i * BC) & m_t
    b_sd = tl.where(m_j[:, None], b_st * tl.exp(b_gr[None, :] - b_gt), 0.0)  # [BT, BM]
    b_p = tl.dot(b_a * tl.exp(b_gi - b_gr[None, :]), tl.trans(b_sd), input_precision=PREC)  # [BC, BT]
    b_xt = load_rows(x + i_h * D, o_t, m_t, H * D, o_d, m_d).to(tl.float32)  # [BT, BD]
    b_o += tl.dot(b_p, b_xt, input_precision=PREC)
    # the diagonal sub-block, pairwise: [BC (t), BC (j), BM]
    m_tj = (o_i[:, None] >= o_i[None, :]) & m_i[:, None] & m_i[None, :]
    b_d = tl.exp(tl.where(m_tj[:, :, None], b_gi[:, None, :] - b_gi[None, :, :], float("-inf")))
    b_pd = tl.sum(b_a[:, None, :] * b_si[None, :, :] * b_d, axis=2)  # [BC, BC]
    b_xi = load_rows(x + i_h * D, o_i, m_i, H * D, o_d, m_d).to(tl.float32)  # [BC, BD]
    b_o += tl.dot(b_pd, b_xi, input_precision=PREC)

    p_o = o + o_i[:, None].to(tl.int64) * HQ * D + i_hq * D + o_d[None, :]
    tl.store(p_o, (b_o * scale).to(o.dtype.element_ty), mask=m_i[:, None] & m_d[None, :])


def _launch(A, s, gl, x, h, chunks, scale, softmax, out_dtype, HQ, prec):
    TT, H, D = x.shape
    M = s.shape[-1]
    out = torch.empty(TT, HQ, D, dtype=out_dtype, device=x.device)
    BD = block(D, 64)
    grid = (chunks.NT * (BT // BC), HQ, triton.cdiv(D, BD))
    chunk_gsa_fwd_kernel_o[grid](A, s, gl, x, h, out, chunks.cu_seqlens, chunks.indices, scale,
                                 H=H, HQ=HQ, D=D, M=M, BT=BT, BC=BC, BD=BD, BM=block(M, 128),
                                 SOFTMAX=softmax, PREC=prec, num_warps=4)
    return out


def chunk_fwd_o(A: torch.Tensor, s: torch.Tensor, gl: torch.Tensor, v: torch.Tensor, hv: torch.Tensor,
                chunks: Chunks, dtype: torch.dtype, prec: str) -> torch.Tensor:
    """o [TT, HQ, V] in `dtype` from A1 [TT, HQ, M], s/gl [TT, H, M], v [TT, H, V], hv [NT, H, V, M]."""
    return _launch(A, s, gl, v, hv, chunks, 1.0, True, dtype, A.shape[1], prec)


def chunk_bwd_dq(dA: torch.Tensor, s: torch.Tensor, gl: torch.Tensor, k: torch.Tensor, hk: torch.Tensor,
                 chunks: Chunks, scale: float, dtype: torch.dtype, prec: str) -> torch.Tensor:
    """dq [TT, HQ, K] in `dtype` from dA1 [TT, HQ, M], s/gl [TT, H, M], k [TT, H, K], hk [NT, H, K, M]."""
    return _launch(dA, s, gl, k, hk, chunks, scale, False, dtype, dA.shape[1], prec)
