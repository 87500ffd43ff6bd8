"""Per-step slot scores of the first pass (forward) and of the second pass's read (backward).

For a query sub-block of BC rows of a chunk, with chunk-local cumulative gates Gl and chunk-start state S [D, M]:
    X_t[m] = scale * ( exp(Gl_t[m]) * (a_t @ S)[m] + sum_{c0 <= j <= t} (a_t . b_j) * s_j[m] * exp(Gl_t[m] - Gl_j[m]) )
Forward: a = q, b = k, S = Hk, and X = A1 (the pre-softmax scores). Backward: a = dO, b = v, S = Hv^T, scale 1, and
X = dp; the kernel then applies the softmax backward and writes dA1 and the reading half of dG.
From the same rows it writes the sub-block's rows of an intra-chunk mixing matrix, P [BT, BT] per chunk and query
head, for c0 <= j <= t:
    P[t, j] = sum_m w_t[m] * s_j[m] * exp(Gl_t[m] - Gl_j[m])      (0 above the diagonal),
with w = softmax(A1) in the forward (o = P @ v + ...; dv = P^T @ dO + ...) and w = dA1 in the backward
(dq = scale * (P @ k + ...), dk = scale * (P^T @ q + ...)); stored float32 as [TT, HQ, BT] (row t, column j - c0).
Both reuse the decayed slot weights s_j * exp(Gl_r - Gl_j) of the chunk: one kernel instead of two reading A1, s
and Gl back.
Earlier sub-blocks factor the decay through the query block's first row r (both factors <= 1); so does the diagonal
sub-block while its decay span allows (SETTINGS.factor_span), else it takes exp(Gl_t - Gl_j) pairwise.
A program takes one query head, or with the launch option GROUP all the query heads of a kv head in turn: their Gl
and s rows, span test and decayed slot weights depend on the kv head only and are then taken once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gsa.ops.triton.chunks import (
    BC, BT, Chunks, chunk_bounds, program_tiles, row_block, sub_block_program, sub_block_tiles, tiles_grid,
)
from gsa.ops.triton.launch import block, check_flag, launch, launch_options, mixed_dots_mode
from gsa.ops.triton.settings import SETTINGS, SHAPE_SUFFIXES
from gsa.ops.triton.tiles import (
    chunk_span_max, decayed_rows, factor_span, load_row, load_rows, mixed_dot, pairwise_decay, row_dots,
    softmax_and_stats, softmax_from_stats, store_softmax_stats, sub_block_span,
)


@triton.jit
def chunk_weights(b_st, b_gt, b_gr, m_t, i_i, factored, BT: tl.constexpr, BC: tl.constexpr):
    """(o_c [BT], the chunk's row offsets; b_sd [BT, BM], the decayed slot weights s_j * exp(Gl_r - Gl_j) of its rows
    j before sub-block i_i (and, factored, inside it), 0 on the others) from s and Gl of the chunk (b_st, b_gt
    [BT, BM]) and Gl of the sub-block's first row r (b_gr [BM])."""
    # earlier sub-blocks (and, factored, the diagonal one): exp(Gl_t - Gl_j) = exp(Gl_t - Gl_r) * exp(Gl_r - Gl_j),
    # both <= 1 for earlier rows j; for diagonal rows the second is <= exp(span)
    o_c = tl.arange(0, BT)
    m_j = (o_c < i_i * BC + tl.where(factored, BC, 0)) & m_t
    return o_c, decayed_rows(b_st, b_gt, b_gr, m_j)


@triton.jit
def head_dots(a, b, p_h, i_hq, i_h, H, HQ, D, M, o_t, m_t, o_i, m_i, o_m, m_m, b_gi,
              BT: tl.constexpr, BC: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr, PREC: tl.constexpr,
              MIX: tl.constexpr):
    """Query head i_hq's dots over D: (b_x [BC, BM], exp(Gl_i) * (a_i @ S), the inter-chunk scores; b_ab [BC, BT],
    a_i . b_j over the chunk). p_h: the chunk-start state [D, M] of kv head i_h."""
    b_x = tl.zeros([BC, BM], dtype=tl.float32)
    b_ab = tl.zeros([BC, BT], dtype=tl.float32)
    for i_d in range(tl.cdiv(D, BD)):
        o_d = i_d * BD + tl.arange(0, BD)
        m_d = o_d < D
        b_ai = load_rows(a + i_hq * D, o_i, m_i, HQ * D, o_d, m_d)  # [BC, BD]
        b_bt = load_rows(b + i_h * D, o_t, m_t, H * D, o_d, m_d)  # [BT, BD]
        b_h = load_rows(p_h, o_d, m_d, M, o_m, m_m)  # [BD, BM], stored float32 or as the inputs
        # float32 states, or states stored as the inputs (SETTINGS.chunk_states): exact products at the 16-bit rate
        b_x = mixed_dot(b_ai, b_h, b_x, MIX, PREC)
        b_ab += tl.dot(b_ai, tl.trans(b_bt), input_precision=PREC)
    b_x *= tl.exp(b_gi)
    return b_x, b_ab


@triton.jit
def head_rows(a, b, s, A, L, dA, dGq, P, scale, i_hq, i_h, i_i, t0, H, HQ, D, M, o_i, m_i, o_m, m_m, o_c,
              b_gi, b_gr, b_sd, b_x, b_ab, factored,
              BT: tl.constexpr, BC: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr,
              BACKWARD: tl.constexpr, LINEAR: tl.constexpr, PREC: tl.constexpr):
    """Query head i_hq's rest, from its head_dots and the kv head's decayed slot weights b_sd [BT, BM]: the
    intra-chunk scores, the stores of A1 and its rows' softmax statistics L (or, reading them, dA1 and dGq) and of
    the sub-block's rows of P."""
    b_ab = tl.where(o_c[None, :] <= (o_i - t0)[:, None], b_ab, 0.0)  # causal inside the diagonal sub-block
    b_x += tl.exp(b_gi - b_gr[None, :]) * tl.dot(b_ab, b_sd, input_precision=PREC)
    if not factored:  # the diagonal sub-block, pairwise: [BC (t), BC (j), BM]
        # a_i . b_j inside the sub-block
        b_abd = row_dots(a + i_hq * D, o_i, m_i, HQ * D, b + i_h * D, o_i, m_i, H * D, D, BC, BC, BD, PREC)
        b_si = load_rows(s + i_h * M, o_i, m_i, H * M, o_m, m_m).to(tl.float32)  # [BC, BM]
        b_d = pairwise_decay(b_gi, o_i, m_i)  # [BC (t), BC (j), BM]
        b_x += tl.sum(b_abd[:, :, None] * b_si[None, :, :] * b_d, axis=1)
    b_x *= scale

    m_im = m_i[:, None] & m_m[None, :]
    o_im = o_i[:, None].to(tl.int64) * HQ * M + i_hq * M + o_m[None, :]
    if BACKWARD:
        b_a1 = tl.load(A + o_im, mask=m_im, other=0)  # [BC, BM]
        if LINEAR:  # the read weights are the scores themselves: dA1 = dp
            b_p = b_a1
            b_da = b_x
        else:
            b_p = softmax_from_stats(b_a1, L + i_hq * 2, o_i, m_i, 2 * HQ, m_im)  # as the forward stored them
            b_da = b_p * (b_x - tl.sum(b_p * b_x, 1)[:, None])
        tl.store(dA + o_im, b_da, mask=m_im)
        # the reading terms of dG (docs/algorithm.md, "Backward"): A1 * dA1 + p * dp
        tl.store(dGq + o_im, b_a1 * b_da + b_p * b_x, mask=m_im)
        b_w = b_da  # the first pass's mixing matrix (for dq, dk) weighs by dA1
    else:
        tl.store(A + o_im, b_x, mask=m_im)
        if LINEAR:
            b_w = b_x
        else:  # the second pass reads with softmax(A1); its readers rebuild it from A1 and L (tiles.load_softmax)
            b_w, b_mx, b_lz = softmax_and_stats(b_x, m_im)
            store_softmax_stats(L + i_hq * 2, o_i, m_i, 2 * HQ, b_mx, b_lz)
    # This sub-block's rows of the pass's intra-chunk mixing matrix, from the decayed slot weights b_sd already at
    # hand (the same factoring through row r): P[t, j] = sum_m w_t[m] * s_j[m] * exp(Gl_t[m] - Gl_j[m]), j <= t.
    b_wi = tl.where(m_i[:, None], b_w * tl.exp(b_gi - b_gr[None, :]), 0.0)
    b_pt = tl.dot(b_wi, tl.trans(b_sd), input_precision=PREC)  # [BC, BT]
    b_pt = tl.where(o_c[None, :] <= (o_i - t0)[:, None], b_pt, 0.0)  # causal inside the diagonal sub-block
    p_p = P + o_i[:, None].to(tl.int64) * HQ * BT + i_hq * BT
    if factored:
        tl.store(p_p + o_c[None, :], b_pt, mask=m_i[:, None])
    else:  # the diagonal sub-block pairwise
        b_si = load_rows(s + i_h * M, o_i, m_i, H * M, o_m, m_m).to(tl.float32)  # [BC, BM]
        b_d = pairwise_decay(b_gi, o_i, m_i)  # [BC (t), BC (j), BM]
        b_pd = tl.sum(b_w[:, None, :] * b_si[None, :, :] * b_d, axis=2)  # [BC, BC]
        # two stores to disjoint columns: stores of one program from different threads are not ordered
        m_off = (o_c < i_i * BC) | (o_c >= i_i * BC + BC)
        tl.store(p_p + o_c[None, :], b_pt, mask=m_i[:, None] & m_off[None, :])
        tl.store(p_p + i_i * BC + tl.arange(0, BC)[None, :], b_pd, mask=m_i[:, None])


@triton.jit
def chunk_gsa_fwd_kernel_a(a, b, s, gl, h, A, L, dA, dGq, P, cu_seqlens, chunk_indices, scale,
                           H, HQ, D, M, span_max,
                           BT: tl.constexpr, BC: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr,
                           BACKWARD: tl.constexpr, LINEAR: tl.constexpr, PREC: tl.constexpr, GROUP: tl.constexpr,
                           MIX: tl.constexpr):
    # GROUP: one program per kv head, for all HQ // H query heads of its group (tiles_grid(BT // BC, H, NT)); what
    # depends on the kv head only (its Gl and s rows, the span test, the decayed slot weights) is then taken once
    if GROUP:
        i_c, i_i, i_h, t0, eos = sub_block_tiles(cu_seqlens, chunk_indices, H, BT, BC)
        ti = t0 + i_i * BC
    else:
        i_c, i_i, i_hq, i_h, t0, eos, ti = sub_block_program(cu_seqlens, chunk_indices, H, HQ, BT, BC)
    if ti >= eos:
        return
    o_t = t0 + tl.arange(0, BT)
    o_i = ti + tl.arange(0, BC)
    o_m = tl.arange(0, BM)
    m_t, m_i, m_m = o_t < eos, o_i < eos, o_m < M

    b_gt = load_rows(gl + i_h * M, o_t, m_t, H * M, o_m, m_m)  # [BT, BM]
    b_gi = load_rows(gl + i_h * M, o_i, m_i, H * M, o_m, m_m)  # [BC, BM]
    b_gr = load_row(gl + i_h * M, ti, H * M, o_m, m_m)  # [BM]
    b_st = load_rows(s + i_h * M, o_t, m_t, H * M, o_m, m_m).to(tl.float32)  # [BT, BM]
    # the diagonal sub-block goes through the dot below with the rest while its decay span allows (SETTINGS.factor_span)
    factored = sub_block_span(b_gi, b_gr) < span_max

    p_h = h + (i_c.to(tl.int64) * H + i_h) * D * M
    if GROUP:
        o_c, b_sd = chunk_weights(b_st, b_gt, b_gr, m_t, i_i, factored, BT, BC)
        G = HQ // H
        for i_hq in range(i_h * G, i_h * G + G):
            b_x, b_ab = head_dots(a, b, p_h, i_hq, i_h, H, HQ, D, M, o_t, m_t, o_i, m_i, o_m, m_m, b_gi,
                                  BT, BC, BD, BM, PREC, MIX)
            head_rows(a, b, s, A, L, dA, dGq, P, scale, i_hq, i_h, i_i, t0, H, HQ, D, M, o_i, m_i, o_m, m_m, o_c,
                      b_gi, b_gr, b_sd, b_x, b_ab, factored, BT, BC, BD, BM, BACKWARD, LINEAR, PREC)
    else:
        b_x, b_ab = head_dots(a, b, p_h, i_hq, i_h, H, HQ, D, M, o_t, m_t, o_i, m_i, o_m, m_m, b_gi,
                              BT, BC, BD, BM, PREC, MIX)
        o_c, b_sd = chunk_weights(b_st, b_gt, b_gr, m_t, i_i, factored, BT, BC)
        head_rows(a, b, s, A, L, dA, dGq, P, scale, i_hq, i_h, i_i, t0, H, HQ, D, M, o_i, m_i, o_m, m_m, o_c,
                  b_gi, b_gr, b_sd, b_x, b_ab, factored, BT, BC, BD, BM, BACKWARD, LINEAR, PREC)


@triton.jit
def chunk_gsa_fwd_kernel_a_whole(a, b, s, gl, h, A, L, dA, dGq, P, cu_seqlens, chunk_indices, scale,
                                 H, HQ, D, M, span_max, chunk_max,
                                 BT: tl.constexpr, BC: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr,
                                 BACKWARD: tl.constexpr, LINEAR: tl.constexpr, PREC: tl.constexpr,
                                 GROUP: tl.constexpr, RB: tl.constexpr, MIX: tl.constexpr):
    """kernel_a with one program a chunk (launch option "WHOLE"), for one query head (GROUP: all of a kv head's):
    while the chunk's decay span (max over slots of Gl_first - Gl_last) stays under chunk_max, its BT rows are one
    block factored through the chunk's first row (exp(Gl_t - Gl_0) <= 1, exp(Gl_0 - Gl_j) <= exp(span)): the
    chunk's rows of k, s, Gl and its state are loaded once, and every product is a [BT, *] tensor-core dot, where
    the sub-block programs load them once a sub-block. Above the span the program walks the BC-row sub-blocks in
    turn, as kernel_a's programs do (span_max guarding each diagonal sub-block).
    RB (launch option, default BT): a program takes RB rows of the chunk (a row block), factored through the block's
    first row r while the block's own span stays under chunk_max (exp(Gl_t - Gl_r) <= 1 for its rows, exp(Gl_r -
    Gl_j) <= 1 for the chunk's earlier rows, <= exp(span) inside the block), else walking the block's sub-blocks; its
    [RB, *] tiles are the whole chunk's halved at RB = BT / 2."""
    NR: tl.constexpr = BT // RB  # row blocks a chunk
    NC: tl.constexpr = RB // BC  # sub-blocks a row block
    if GROUP:
        i_r, i_n, i_c = program_tiles(NR, H)
        i_h = i_n
    else:
        i_r, i_n, i_c = program_tiles(NR, HQ)
        i_h = i_n // (HQ // H)
    t0, eos = chunk_bounds(cu_seqlens, chunk_indices, i_c, BT)
    tr = t0 + i_r * RB  # the block's first row, its reference row
    if tr >= eos:
        return
    o_t = t0 + tl.arange(0, BT)
    o_r = tr + tl.arange(0, RB)
    o_m = tl.arange(0, BM)
    m_t, m_r, m_m = o_t < eos, o_r < eos, o_m < M
    b_gt = load_rows(gl + i_h * M, o_t, m_t, H * M, o_m, m_m)  # [BT, BM]
    if RB == BT:  # the whole chunk: its rows are the block's, loaded once
        b_gb = b_gt
    else:
        b_gb = load_rows(gl + i_h * M, o_r, m_r, H * M, o_m, m_m)  # [RB, BM]
    b_g0 = load_row(gl + i_h * M, tr, H * M, o_m, m_m)  # [BM]
    p_h = h + (i_c.to(tl.int64) * H + i_h) * D * M
    G = HQ // H
    n_q = G if GROUP else 1
    hq0 = i_h * G if GROUP else i_n
    if sub_block_span(b_gb, b_g0) < chunk_max:  # masked rows load as 0: Gl_r - 0 <= 0, never above a valid row's
        # the decayed slot weights: once for a kv head's query heads (GROUP), else after the D loop (fewer live
        # [BT, BM] tiles during it)
        if GROUP:
            b_st = load_rows(s + i_h * M, o_t, m_t, H * M, o_m, m_m).to(tl.float32)  # [BT, BM]
            o_c, b_sd = chunk_weights(b_st, b_gt, b_g0, m_t, i_r, True, BT, RB)
        for i_hq in range(hq0, hq0 + n_q):
            b_x, b_ab = head_dots(a, b, p_h, i_hq, i_h, H, HQ, D, M, o_t, m_t, o_r, m_r, o_m, m_m, b_gb,
                                  BT, RB, BD, BM, PREC, MIX)
            if not GROUP:
                b_st = load_rows(s + i_h * M, o_t, m_t, H * M, o_m, m_m).to(tl.float32)  # [BT, BM]
                o_c, b_sd = chunk_weights(b_st, b_gt, b_g0, m_t, i_r, True, BT, RB)
            head_rows(a, b, s, A, L, dA, dGq, P, scale, i_hq, i_h, i_r, t0, H, HQ, D, M, o_r, m_r, o_m, m_m, o_c,
                      b_gb, b_g0, b_sd, b_x, b_ab, True, BT, RB, BD, BM, BACKWARD, LINEAR, PREC)
    else:
        b_st = load_rows(s + i_h * M, o_t, m_t, H * M, o_m, m_m).to(tl.float32)  # [BT, BM]
        for i_b in range(NC):
            i_i = i_r * NC + i_b  # the sub-block's index in the chunk
            ti = t0 + i_i * BC
            if ti < eos:
                o_i = ti + tl.arange(0, BC)
                m_i = o_i < eos
                b_gi = load_rows(gl + i_h * M, o_i, m_i, H * M, o_m, m_m)  # [BC, BM]
                b_gr = load_row(gl + i_h * M, ti, H * M, o_m, m_m)  # [BM]
                factored = sub_block_span(b_gi, b_gr) < span_max
                o_c, b_sd = chunk_weights(b_st, b_gt, b_gr, m_t, i_i, factored, BT, BC)
                for i_hq in range(hq0, hq0 + n_q):
                    b_x, b_ab = head_dots(a, b, p_h, i_hq, i_h, H, HQ, D, M, o_t, m_t, o_i, m_i, o_m, m_m, b_gi,
                                          BT, BC, BD, BM, PREC, MIX)
                    head_rows(a, b, s, A, L, dA, dGq, P, scale, i_hq, i_h, i_i, t0, H, HQ, D, M, o_i, m_i, o_m, m_m,
                              o_c, b_gi, b_gr, b_sd, b_x, b_ab, factored, BT, BC, BD, BM, BACKWARD, LINEAR, PREC)


def kernel_a_launch(name: str, H: int, HQ: int, M: int, NT: int):
    """(kernel, grid, launch keywords) of kernel_a as `name`: one program per sub-block, query head and chunk, or
    with the launch option GROUP (a bool, default False) one per sub-block, kv head and chunk for all the kv head's
    query heads (with one query head a kv head GROUP changes nothing and is dropped; SETTINGS.launch's "@gqa"
    entries apply where HQ > H); with the launch option WHOLE (a bool, default False) one program a chunk instead
    of a sub-block (chunk_gsa_fwd_kernel_a_whole), or with WHOLE and RB (chunks.row_block) one a block of RB rows."""
    for entry in (name, *(name + suffix for suffix in SHAPE_SUFFIXES)):  # each entry's, even one overridden later
        for flag, meaning in (("GROUP", "one program a kv head"), ("WHOLE", "one program a chunk")):
            if flag in SETTINGS.launch.get(entry, {}):
                check_flag(entry, flag, SETTINGS.launch[entry][flag], meaning)
    opts = launch_options(name, slots=M, grouped=HQ > H, GROUP=False, WHOLE=False)
    opts["GROUP"] = opts["GROUP"] and HQ > H
    heads = H if opts["GROUP"] else HQ
    whole = opts.pop("WHOLE")
    rb = row_block(name, opts, BC, whole)
    if whole:
        return (chunk_gsa_fwd_kernel_a_whole, tiles_grid(BT // rb, heads, NT),
                {**opts, "RB": rb, "chunk_max": chunk_span_max()})
    return chunk_gsa_fwd_kernel_a, tiles_grid(BT // BC, heads, NT), opts


def chunk_fwd_a(q: torch.Tensor, k: torch.Tensor, s: torch.Tensor, gl: torch.Tensor, hk: torch.Tensor,
                chunks: Chunks, scale: float, prec: str, linear_read: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """A1 [TT, HQ, M] float32, the first pass's pre-softmax slot scores; L [TT, HQ, 2] float32, each row's max and
    log of its sum of exp(A1 - max) (softmax(A1) = exp((A1 - max) - log_sum): tiles.softmax_and_stats; None with
    linear_read); and P [TT, HQ, BT] float32, the second pass's intra-chunk
    mixing matrix (weights softmax(A1), or A1 with linear_read). q: [TT, HQ, K], k: [TT, H, K], s/gl: [TT, H, M],
    hk: [NT, H, K, M] chunk-start states."""
    TT, HQ, D = q.shape
    H, M = k.shape[1], s.shape[-1]
    A = torch.empty(TT, HQ, M, dtype=torch.float32, device=q.device)
    L = None if linear_read else torch.empty(TT, HQ, 2, dtype=torch.float32, device=q.device)
    P = torch.empty(TT, HQ, BT, dtype=torch.float32, device=q.device)
    kernel, grid, opts = kernel_a_launch("a" if D > 128 else "a-small", H, HQ, M, chunks.NT)
    launch(kernel, grid)(q, k, s, gl, hk, A, L, None, None, P, chunks.cu_seqlens, chunks.indices, scale,
                         H=H, HQ=HQ, D=D, M=M, span_max=factor_span(), BT=BT, BC=BC, BD=block(D, 64),
                         BM=block(M, 128), BACKWARD=False, LINEAR=linear_read, PREC=prec,
                         MIX=mixed_dots_mode(q.dtype, "a"), **opts)
    return A, L, P


def chunk_bwd_dp(do: torch.Tensor, v: torch.Tensor, s: torch.Tensor, gl: torch.Tensor, hv: torch.Tensor,
                 A: torch.Tensor, L: torch.Tensor | None, chunks: Chunks, prec: str, linear_read: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From dO [TT, HQ, V], v [TT, H, V], the chunk-start states hv [NT, H, V, M], A1 [TT, HQ, M] and its rows'
    softmax statistics L [TT, HQ, 2] (chunk_fwd_a; None with linear_read): dA1 and
    the reading half of dG, A1 * dA1 + p * dp, both [TT, HQ, M] float32 (p = softmax(A1), or A1 with
    linear_read), and the first pass's mixing matrix P1 [TT, HQ, BT] float32 (weights dA1) for dq and dk."""
    TT, HQ, D = do.shape
    H, M = v.shape[1], s.shape[-1]
    dA = torch.empty(TT, HQ, M, dtype=torch.float32, device=do.device)
    dGq = torch.empty_like(dA)
    P1 = torch.empty(TT, HQ, BT, dtype=torch.float32, device=do.device)
    kernel, grid, opts = kernel_a_launch("dp" if D > 128 else "dp-small", H, HQ, M, chunks.NT)
    launch(kernel, grid)(do, v, s, gl, hv, A, L, dA, dGq, P1, chunks.cu_seqlens, chunks.indices, 1.0,
                         H=H, HQ=HQ, D=D, M=M, span_max=factor_span(), BT=BT, BC=BC, BD=block(D, 64),
                         BM=block(M, 128), BACKWARD=True, LINEAR=linear_read, PREC=prec,
                         MIX=mixed_dots_mode(do.dtype, "a"), **opts)
    return dA, dGq, P1
