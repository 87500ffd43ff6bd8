"""Slot-weight gradient ds = ds1 + ds2 (both passes write through s) and the per-step gate term dG.

For the key rows j of a chunk, per pass (x, y, a, dS, scale): with the gradient dS [D, M] of the chunk-end state,
    ds_j[m] = exp(Gl_last[m] - Gl_j[m]) * (x_j @ dS)[m]
            + scale * sum_{query heads} sum_{j <= t < chunk end} (y_t . x_j) * a_t[m] * exp(Gl_t[m] - Gl_j[m]).
Pass 1: x = k, y = q, a = dA1, dS = dHk. Pass 2: x = v, y = dO, a = softmax(A1), dS = dHv^T, scale 1.
Then dG_j = sum_{query heads} (A1 * dA1 + p * dp)_j - s_j * ds_j (GSA_SPEC.md section 3).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gsa.ops.triton.utils import BC, BT, Chunks, block, diag_block, load_row, load_rows, masked_softmax, stack_rows4


# warps per program: a program holds [64, 64] float32 tiles (v3); chosen per measurement on Hopper
NUM_WARPS = 4


@triton.jit
def _diag_reads(b_yx, i, A, gl, i_hq, i_h, t0, eos, H, HQ, M, o_m, m_m,
                BC: tl.constexpr, NC: tl.constexpr, SOFTMAX: tl.constexpr):
    """Sub-block i's own term for its keys j: sum_{t in block i, t >= j} (y_t . x_j) a_t exp(Gl_t - Gl_j)."""
    o_i = t0 + i * BC + tl.arange(0, BC)
    m_i = o_i < eos
    b_yxd = diag_block(b_yx, i, BC, NC)  # [BC (t), BC (j)]
    b_ai = load_rows(A + i_hq * M, o_i, m_i, HQ * M, o_m, m_m)  # [BC, BM]
    if SOFTMAX:
        b_ai = masked_softmax(b_ai, m_i[:, None] & m_m[None, :])
    b_gi = load_rows(gl + i_h * M, o_i, m_i, H * M, o_m, m_m)
    m_tj = (o_i[:, None] >= o_i[None, :]) & m_i[:, None] & m_i[None, :]
    b_d = tl.exp(tl.where(m_tj[:, :, None], b_gi[:, None, :] - b_gi[None, :, :], float("-inf")))  # [BC, BC, BM]
    return tl.sum(b_yxd[:, :, None] * b_ai[:, None, :] * b_d, axis=0)


@triton.jit
def _ds_pass(x, y, A, dh, gl, i_c, i_h, scale, t0, eos, o_l, o_t, m_t, o_m, m_m, b_gt, b_gl,
             H, HQ, D, M, BT: tl.constexpr,
             BC: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr, SOFTMAX: tl.constexpr, PREC: tl.constexpr):
    NC: tl.constexpr = BT // BC
    G = HQ // H
    p_dh = dh + (i_c.to(tl.int64) * H + i_h) * D * M
    b_xs = tl.zeros([BT, BM], dtype=tl.float32)
    for i_d in range(tl.cdiv(D, BD)):
        o_d = i_d * BD + tl.arange(0, BD)
        m_d = o_d < D
        b_x = load_rows(x + i_h * D, o_t, m_t, H * D, o_d, m_d).to(tl.float32)  # [BT, BD]
        b_dh = load_rows(p_dh, o_d, m_d, M, o_m, m_m)  # [BD, BM]
        b_xs += tl.dot(b_x, b_dh, input_precision=PREC)
    b_ds = b_xs * tl.exp(b_gl[None, :] - b_gt)  # [BT, BM]

    b_acc = tl.zeros([BT, BM], dtype=tl.float32)
    for i_g in range(G):
        i_hq = i_h * G + i_g
        b_yx = tl.zeros([BT, BT], dtype=tl.float32)  # y_t . x_j over the chunk
        for i_d in range(tl.cdiv(D, BD)):
            o_d = i_d * BD + tl.arange(0, BD)
            m_d = o_d < D
            b_x = load_rows(x + i_h * D, o_t, m_t, H * D, o_d, m_d)  # [BT, BD]
            b_y = load_rows(y + i_hq * D, o_t, m_t, HQ * D, o_d, m_d)  # [BT, BD]
            b_yx += tl.dot(b_y, tl.trans(b_x), input_precision=PREC)
        b_at = load_rows(A + i_hq * M, o_t, m_t, HQ * M, o_m, m_m)  # [BT, BM]
        if SOFTMAX:
            b_at = masked_softmax(b_at, m_t[:, None] & m_m[None, :])
        # later sub-blocks: for keys j of sub-block i (last row e), exp(Gl_t - Gl_j) = exp(Gl_t - Gl_e) *
        # exp(Gl_e - Gl_j), both <= 1; one [BT, BT]^T @ [BT, BM] dot per reference row
        for i in tl.static_range(0, NC - 1):
            has_e = t0 + i * BC + BC < eos  # else no query row lies after this sub-block
            b_ge = tl.load(gl + (t0 + i * BC + BC - 1) * H * M + i_h * M + o_m, mask=m_m & has_e,
                           other=0).to(tl.float32)  # [BM]
            m_after = (o_l >= i * BC + BC) & m_t & has_e
            b_ad = tl.where(m_after[:, None], b_at * tl.exp(tl.where(m_after[:, None], b_gt - b_ge[None, :], 0.0)),
                            0.0)
            m_j = (o_l >= i * BC) & (o_l < i * BC + BC) & m_t & has_e
            b_acc += tl.exp(tl.where(m_j[:, None], b_ge[None, :] - b_gt, float("-inf"))) * tl.dot(
                tl.trans(b_yx), b_ad, input_precision=PREC)
        b_acc += stack_rows4(_diag_reads(b_yx, 0, A, gl, i_hq, i_h, t0, eos, H, HQ, M, o_m, m_m, BC, NC, SOFTMAX),
                             _diag_reads(b_yx, 1, A, gl, i_hq, i_h, t0, eos, H, HQ, M, o_m, m_m, BC, NC, SOFTMAX),
                             _diag_reads(b_yx, 2, A, gl, i_hq, i_h, t0, eos, H, HQ, M, o_m, m_m, BC, NC, SOFTMAX),
                             _diag_reads(b_yx, 3, A, gl, i_hq, i_h, t0, eos, H, HQ, M, o_m, m_m, BC, NC, SOFTMAX),
                             BC, BM)
    return b_ds + scale * b_acc


@triton.jit
def chunk_gsa_bwd_kernel_ds(q, k, v, do, s, gl, A, dA, dGq, dhk, dhv, ds, dG, cu_seqlens, chunk_indices, scale,
                            H, HQ, K, V, M,
                            BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                            BM: tl.constexpr, PREC: tl.constexpr):
    # one program per (chunk, head) over all BT key rows (v3; v2 took 16-row sub-blocks and re-read the query
    # rows and the state gradients four times)
    tl.static_assert(BT // BC == 4, "stack_rows4 assembles four sub-blocks")
    G = HQ // H
    i_c, i_h = tl.program_id(0), tl.program_id(1)
    i_n, i_t = tl.load(chunk_indices + i_c * 2), tl.load(chunk_indices + i_c * 2 + 1)
    bos = tl.load(cu_seqlens + i_n).to(tl.int64)
    eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
    t0 = bos + i_t * BT
    last = tl.minimum(t0 + BT, eos) - 1
    o_l = tl.arange(0, BT)
    o_t = t0 + o_l
    o_m = tl.arange(0, BM)
    m_t, m_m = o_t < eos, o_m < M

    b_gt = load_rows(gl + i_h * M, o_t, m_t, H * M, o_m, m_m)  # [BT, BM]
    b_gl = load_row(gl + i_h * M, last, H * M, o_m, m_m)  # [BM]

    b_ds = _ds_pass(k, q, dA, dhk, gl, i_c, i_h, scale, t0, eos, o_l, o_t, m_t, o_m, m_m, b_gt, b_gl,
                    H, HQ, K, M, BT, BC, BK, BM, False, PREC)
    b_ds += _ds_pass(v, do, A, dhv, gl, i_c, i_h, 1.0, t0, eos, o_l, o_t, m_t, o_m, m_m, b_gt, b_gl,
                     H, HQ, V, M, BT, BC, BV, BM, True, PREC)

    b_st = load_rows(s + i_h * M, o_t, m_t, H * M, o_m, m_m).to(tl.float32)  # [BT, BM]
    b_dg = -b_st * b_ds
    for i_g in range(G):
        b_dg += load_rows(dGq + (i_h * G + i_g) * M, o_t, m_t, HQ * M, o_m, m_m)
    m_tm = m_t[:, None] & m_m[None, :]
    o_tm = o_t[:, None].to(tl.int64) * H * M + i_h * M + o_m[None, :]
    tl.store(ds + o_tm, b_ds.to(ds.dtype.element_ty), mask=m_tm)
    tl.store(dG + o_tm, b_dg, mask=m_tm)


def chunk_bwd_ds(q, k, v, do, s, gl, A, dA, dGq, dhk, dhv, chunks: Chunks, scale: float, prec: str):
    """ds [TT, H, M] in s's dtype and dG [TT, H, M] float32 (before the reverse cumulative sum over time).

    q/do: [TT, HQ, K|V], k/v: [TT, H, K|V], s/gl: [TT, H, M], A/dA/dGq: [TT, HQ, M] float32,
    dhk [NT, H, K, M] and dhv [NT, H, V, M]: gradients of the chunk-end states."""
    TT, HQ, K = q.shape
    H, V, M = k.shape[1], v.shape[-1], s.shape[-1]
    ds = torch.empty(TT, H, M, dtype=s.dtype, device=s.device)
    dG = torch.empty(TT, H, M, dtype=torch.float32, device=s.device)
    grid = (chunks.NT, H)
    chunk_gsa_bwd_kernel_ds[grid](q, k, v, do, s, gl, A, dA, dGq, dhk, dhv, ds, dG, chunks.cu_seqlens,
                                  chunks.indices, scale, H=H, HQ=HQ, K=K, V=V, M=M, BT=BT, BC=BC,
                                  BK=block(K, 64), BV=block(V, 64), BM=block(M, 128), PREC=prec, num_warps=NUM_WARPS)
    return ds, dG
