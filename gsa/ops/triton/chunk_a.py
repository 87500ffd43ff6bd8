"""Per-step slot scores of the first pass (forward) and of the second pass's read (backward).

For the BT rows of a chunk, with chunk-local cumulative gates Gl and chunk-start state S [D, M]:
    X_t[m] = scale * ( exp(Gl_t[m]) * (a_t @ S)[m] + sum_{c0 <= j <= t} (a_t . b_j) * s_j[m] * exp(Gl_t[m] - Gl_j[m]) )
Forward: a = q, b = k, S = Hk, and X = A1 (the pre-softmax scores). Backward: a = dO, b = v, S = Hv^T, scale 1, and
X = dp; the kernel then applies the softmax backward and writes dA1 and the reading half of dG.
One program takes a whole chunk (v3; v2 took 16-row sub-blocks and re-read the state tile and b four times).
Across sub-blocks the decay is factored through the query sub-block's first row r (both factors <= 1); inside a
sub-block exp(Gl_t - Gl_j) is taken pairwise.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gsa.ops.triton.utils import BC, BT, Chunks, block, diag_block, load_rows, masked_softmax, stack_rows4


# warps per program: a program holds [64, 64] float32 tiles (v3); chosen per measurement on Hopper
NUM_WARPS = 4


@triton.jit
def _diag_scores(b_ab, i, s, gl, i_h, t0, eos, H, M, o_m, m_m,
                 BC: tl.constexpr, NC: tl.constexpr, BM: tl.constexpr):
    """Sub-block i's own term: sum_{j in block i, j <= t} (a_t . b_j) * s_j * exp(Gl_t - Gl_j), [BC, BM]."""
    o_i = t0 + i * BC + tl.arange(0, BC)
    m_i = o_i < eos
    b_abd = diag_block(b_ab, i, BC, NC)  # [BC (t), BC (j)]
    b_gi = load_rows(gl + i_h * M, o_i, m_i, H * M, o_m, m_m)  # [BC, BM]
    b_si = load_rows(s + i_h * M, o_i, m_i, H * M, o_m, m_m).to(tl.float32)
    m_tj = (o_i[:, None] >= o_i[None, :]) & m_i[:, None] & m_i[None, :]
    b_d = tl.exp(tl.where(m_tj[:, :, None], b_gi[:, None, :] - b_gi[None, :, :], float("-inf")))  # [BC, BC, BM]
    return tl.sum(b_abd[:, :, None] * b_si[None, :, :] * b_d, axis=1)


@triton.jit
def chunk_gsa_fwd_kernel_a(a, b, s, gl, h, A, dA, dGq, cu_seqlens, chunk_indices, scale,
                           H, HQ, D, M,
                           BT: tl.constexpr, BC: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr,
                           BACKWARD: tl.constexpr, PREC: tl.constexpr):
    # one program per (chunk, query head) over all BT rows: the state tile and b are read once per chunk
    NC: tl.constexpr = BT // BC
    tl.static_assert(NC == 4, "stack_rows4 assembles four sub-blocks")
    i_c, i_hq = tl.program_id(0), tl.program_id(1)
    i_h = i_hq // (HQ // H)
    i_n, i_t = tl.load(chunk_indices + i_c * 2), tl.load(chunk_indices + i_c * 2 + 1)
    bos = tl.load(cu_seqlens + i_n).to(tl.int64)
    eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
    t0 = bos + i_t * BT
    o_l = tl.arange(0, BT)
    o_t = t0 + o_l
    o_m = tl.arange(0, BM)
    m_t, m_m = o_t < eos, o_m < M

    p_h = h + (i_c.to(tl.int64) * H + i_h) * D * M
    b_x = tl.zeros([BT, BM], dtype=tl.float32)  # a_t @ S: the inter-chunk scores
    b_ab = tl.zeros([BT, BT], dtype=tl.float32)  # a_t . b_j over the chunk
    for i_d in range(tl.cdiv(D, BD)):
        o_d = i_d * BD + tl.arange(0, BD)
        m_d = o_d < D
        b_a = load_rows(a + i_hq * D, o_t, m_t, HQ * D, o_d, m_d)  # [BT, BD]
        b_b = load_rows(b + i_h * D, o_t, m_t, H * D, o_d, m_d)  # [BT, BD]
        b_h = load_rows(p_h, o_d, m_d, M, o_m, m_m)  # [BD, BM]
        b_x += tl.dot(b_a.to(tl.float32), b_h, input_precision=PREC)
        b_ab += tl.dot(b_a, tl.trans(b_b), input_precision=PREC)

    b_gt = load_rows(gl + i_h * M, o_t, m_t, H * M, o_m, m_m)  # [BT, BM]
    b_st = load_rows(s + i_h * M, o_t, m_t, H * M, o_m, m_m).to(tl.float32)  # [BT, BM]
    b_x *= tl.exp(b_gt)
    # earlier sub-blocks: for rows t of sub-block i (first row r), exp(Gl_t - Gl_j) = exp(Gl_t - Gl_r) *
    # exp(Gl_r - Gl_j), both <= 1; one [BT, BT] @ [BT, BM] dot per reference row
    for i in tl.static_range(1, NC):
        has_r = t0 + i * BC < eos  # else no row of this chunk reads past r (and exp(Gl_r - Gl_j) is not bounded)
        b_gr = tl.load(gl + (t0 + i * BC) * H * M + i_h * M + o_m, mask=m_m & has_r, other=0).to(tl.float32)
        m_j = (o_l < i * BC) & m_t & has_r
        b_sd = tl.where(m_j[:, None], b_st * tl.exp(tl.where(m_j[:, None], b_gr[None, :] - b_gt, 0.0)), 0.0)
        m_i = (o_l >= i * BC) & (o_l < i * BC + BC) & m_t
        b_x += tl.exp(tl.where(m_i[:, None], b_gt - b_gr[None, :], float("-inf"))) * tl.dot(
            b_ab, b_sd, input_precision=PREC)
    b_x += stack_rows4(_diag_scores(b_ab, 0, s, gl, i_h, t0, eos, H, M, o_m, m_m, BC, NC, BM),
                       _diag_scores(b_ab, 1, s, gl, i_h, t0, eos, H, M, o_m, m_m, BC, NC, BM),
                       _diag_scores(b_ab, 2, s, gl, i_h, t0, eos, H, M, o_m, m_m, BC, NC, BM),
                       _diag_scores(b_ab, 3, s, gl, i_h, t0, eos, H, M, o_m, m_m, BC, NC, BM), BC, BM)
    b_x *= scale

    m_tm = m_t[:, None] & m_m[None, :]
    o_tm = o_t[:, None].to(tl.int64) * HQ * M + i_hq * M + o_m[None, :]
    if BACKWARD:
        b_a1 = tl.load(A + o_tm, mask=m_tm, other=0)  # [BT, BM]
        b_p = masked_softmax(b_a1, m_tm)
        b_da = b_p * (b_x - tl.sum(b_p * b_x, 1)[:, None])
        tl.store(dA + o_tm, b_da, mask=m_tm)
        # the reading terms of dG (GSA_SPEC.md section 3): A1 * dA1 + p * dp
        tl.store(dGq + o_tm, b_a1 * b_da + b_p * b_x, mask=m_tm)
    else:
        tl.store(A + o_tm, b_x, mask=m_tm)


def chunk_fwd_a(q: torch.Tensor, k: torch.Tensor, s: torch.Tensor, gl: torch.Tensor, hk: torch.Tensor,
                chunks: Chunks, scale: float, prec: str) -> torch.Tensor:
    """A1 [TT, HQ, M] float32: the first pass's pre-softmax slot scores. q: [TT, HQ, K], k: [TT, H, K],
    s/gl: [TT, H, M], hk: [NT, H, K, M] chunk-start states."""
    TT, HQ, D = q.shape
    H, M = k.shape[1], s.shape[-1]
    A = torch.empty(TT, HQ, M, dtype=torch.float32, device=q.device)
    grid = (chunks.NT, HQ)
    chunk_gsa_fwd_kernel_a[grid](q, k, s, gl, hk, A, None, None, chunks.cu_seqlens, chunks.indices, scale,
                                 H=H, HQ=HQ, D=D, M=M, BT=BT, BC=BC, BD=block(D, 64), BM=block(M, 128),
                                 BACKWARD=False, PREC=prec, num_warps=NUM_WARPS)
    return A


def chunk_bwd_dp(do: torch.Tensor, v: torch.Tensor, s: torch.Tensor, gl: torch.Tensor, hv: torch.Tensor,
                 A: torch.Tensor, chunks: Chunks, prec: str) -> tuple[torch.Tensor, torch.Tensor]:
    """From dO [TT, HQ, V], v [TT, H, V], the chunk-start states hv [NT, H, V, M] and A1 [TT, HQ, M]: dA1 and
    the reading half of dG, A1 * dA1 + p * dp, both [TT, HQ, M] float32."""
    TT, HQ, D = do.shape
    H, M = v.shape[1], s.shape[-1]
    dA = torch.empty(TT, HQ, M, dtype=torch.float32, device=do.device)
    dGq = torch.empty_like(dA)
    grid = (chunks.NT, HQ)
    chunk_gsa_fwd_kernel_a[grid](do, v, s, gl, hv, A, dA, dGq, chunks.cu_seqlens, chunks.indices, 1.0,
                                 H=H, HQ=HQ, D=D, M=M, BT=BT, BC=BC, BD=block(D, 64), BM=block(M, 128),
                                 BACKWARD=True, PREC=prec, num_warps=NUM_WARPS)
    return dA, dGq
