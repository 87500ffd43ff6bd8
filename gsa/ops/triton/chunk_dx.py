"""Key-side gradients dk (first pass) and dv (second pass).

For a key sub-block of BC rows j of a chunk, with the gradient dS [D, M] of the state at the chunk's END:
    dx_j = (s_j * exp(Gl_last - Gl_j)) @ dS^T + scale * sum_{query heads} sum_{j <= t < chunk end} P[t, j] * y_t,
    P[t, j] = sum_m a_t[m] * s_j[m] * exp(Gl_t[m] - Gl_j[m]).
dk: a = dA1, y = q, dS = dHk, the pass's scale. dv: a = softmax(A1), y = dO, dS = dHv^T, scale 1.
Later sub-blocks factor the decay through the key block's last row e; the diagonal sub-block is pairwise.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gsa.ops.triton.utils import BC, BT, Chunks, block, load_row, load_rows, masked_softmax


@triton.jit
def chunk_gsa_bwd_kernel_dx(A, y, s, gl, dh, dx, cu_seqlens, chunk_indices, scale,
                            H: tl.constexpr, HQ: tl.constexpr, D: tl.constexpr, M: tl.constexpr,
                            BT: tl.constexpr, BC: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr,
                            SOFTMAX: tl.constexpr, PREC: tl.constexpr):
    NC: tl.constexpr = BT // BC
    G: tl.constexpr = HQ // H
    i_cj, i_h, i_d = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_c, i_j = i_cj // NC, i_cj % NC
    i_n, i_t = tl.load(chunk_indices + i_c * 2), tl.load(chunk_indices + i_c * 2 + 1)
    bos = tl.load(cu_seqlens + i_n).to(tl.int64)
    eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
    t0 = bos + i_t * BT
    tj = t0 + i_j * BC
    if tj >= eos:
        return
    last = tl.minimum(t0 + BT, eos) - 1
    e = tl.minimum(tj + BC, eos) - 1
    o_t = t0 + tl.arange(0, BT)
    o_j = tj + tl.arange(0, BC)
    o_m = tl.arange(0, BM)
    o_d = i_d * BD + tl.arange(0, BD)
    m_t, m_j, m_m, m_d = o_t < eos, o_j < eos, o_m < M, o_d < D

    b_gt = load_rows(gl + i_h * M, o_t, m_t, H * M, o_m, m_m)  # [BT, BM]
    b_gj = load_rows(gl + i_h * M, o_j, m_j, H * M, o_m, m_m)  # [BC, BM]
    b_ge = load_row(gl + i_h * M, e, H * M, o_m, m_m)  # [BM]
    b_gl = load_row(gl + i_h * M, last, H * M, o_m, m_m)  # [BM]
    b_sj = load_rows(s + i_h * M, o_j, m_j, H * M, o_m, m_m).to(tl.float32)  # [BC, BM]

    # through the chunk-end state
    p_dh = dh + (i_c.to(tl.int64) * H + i_h) * D * M
    b_dh = load_rows(p_dh, o_m, m_m, 1, o_d * M, m_d)  # [BM, BD]
    b_dx = tl.dot(tl.where(m_j[:, None], b_sj * tl.exp(b_gl[None, :] - b_gj), 0.0), b_dh, input_precision=PREC)

    b_sdj = tl.where(m_j[:, None], b_sj * tl.exp(b_ge[None, :] - b_gj), 0.0)  # [BC, BM]
    m_after = (o_t >= tj + BC) & m_t
    m_jt = (o_j[:, None] <= o_j[None, :]) & m_j[:, None] & m_j[None, :]  # [BC (j), BC (t)]
    b_d = tl.exp(tl.where(m_jt[:, :, None], b_gj[None, :, :] - b_gj[:, None, :], float("-inf")))  # [BC, BC, BM]
    b_acc = tl.zeros([BC, BD], dtype=tl.float32)
    for i_g in range(G):
        i_hq = i_h * G + i_g
        b_at = load_rows(A + i_hq * M, o_t, m_t, HQ * M, o_m, m_m)  # [BT, BM]
        b_aj = load_rows(A + i_hq * M, o_j, m_j, HQ * M, o_m, m_m)  # [BC, BM]
        if SOFTMAX:
            b_at = masked_softmax(b_at, m_t[:, None] & m_m[None, :])
            b_aj = masked_softmax(b_aj, m_j[:, None] & m_m[None, :])
        # later sub-blocks: exp(Gl_t - Gl_j) = exp(Gl_t - Gl_e) * exp(Gl_e - Gl_j), both <= 1
        b_ad = tl.where(m_after[:, None], b_at * tl.exp(b_gt - b_ge[None, :]), 0.0)  # [BT, BM]
        b_pt = tl.dot(b_sdj, tl.trans(b_ad), input_precision=PREC)  # [BC, BT]
        b_yt = load_rows(y + i_hq * D, o_t, m_t, HQ * D, o_d, m_d).to(tl.float32)  # [BT, BD]
        b_acc += tl.dot(b_pt, b_yt, input_precision=PREC)
        # the diagonal sub-block, pairwise
        b_ptd = tl.sum(b_sj[:, None, :] * b_aj[None, :, :] * b_d, axis=2)  # [BC (j), BC (t)]
        b_yj = load_rows(y + i_hq * D, o_j, m_j, HQ * D, o_d, m_d).to(tl.float32)  # [BC, BD]
        b_acc += tl.dot(b_ptd, b_yj, input_precision=PREC)
    b_dx += scale * b_acc
    p_dx = dx + o_j[:, None].to(tl.int64) * H * D + i_h * D + o_d[None, :]
    tl.store(p_dx, b_dx.to(dx.dtype.element_ty), mask=m_j[:, None] & m_d[None, :])


def chunk_bwd_dx(A: torch.Tensor, y: torch.Tensor, s: torch.Tensor, gl: torch.Tensor, dh: torch.Tensor,
                 chunks: Chunks, scale: float, softmax: bool, dtype: torch.dtype, prec: str) -> torch.Tensor:
    """dk or dv [TT, H, D] in `dtype`. A: [TT, HQ, M] float32 (dA1, or A1 when `softmax`), y: [TT, HQ, D]
    (q or dO), s/gl: [TT, H, M], dh: [NT, H, D, M] gradients of the chunk-end states."""
    TT, HQ, D = y.shape
    H, M = s.shape[1], s.shape[2]
    dx = torch.empty(TT, H, D, dtype=dtype, device=y.device)
    BD = block(D, 64)
    grid = (chunks.NT * (BT // BC), H, triton.cdiv(D, BD))
    chunk_gsa_bwd_kernel_dx[grid](A, y, s, gl, dh, dx, chunks.cu_seqlens, chunks.indices, scale,
                                  H=H, HQ=HQ, D=D, M=M, BT=BT, BC=BC, BD=BD, BM=block(M, 128),
                                  SOFTMAX=softmax, PREC=prec, num_warps=4)
    return dx
