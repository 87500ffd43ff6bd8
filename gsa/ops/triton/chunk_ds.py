"""Slot-weight gradient ds = ds1 + ds2 (both passes write through s) and the per-step gate term dG.

For a key sub-block of BC rows j, per pass (x, y, a, dS, scale): with the gradient dS [D, M] of the chunk-end state,
    ds_j[m] = exp(Gl_last[m] - Gl_j[m]) * (x_j @ dS)[m]
            + scale * sum_{query heads} sum_{j <= t < chunk end} (y_t . x_j) * a_t[m] * exp(Gl_t[m] - Gl_j[m]).
Pass 1: x = k, y = q, a = dA1, dS = dHk. Pass 2: x = v, y = dO, a = softmax(A1) (A1 with a linear read),
dS = dHv^T, scale 1.
Then dG_j = sum_{query heads} (A1 * dA1 + p * dp)_j - s_j * ds_j (docs/algorithm.md, "Backward").
Later sub-blocks factor the decay through the key block's last row; so does the diagonal sub-block while its decay
span allows (SETTINGS.factor_span), else it takes exp(Gl_t - Gl_j) pairwise.
Every term is separate per slot (the decays are diagonal over slots), so a program takes one BM-wide slot tile; only
softmax(A1) needs each row's max and log-sum over all slots, which kernel_a stored (L; tiles.load_softmax).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gsa.ops.triton.chunks import BC, BT, Chunks, chunk_bounds, program_tiles, tiles_grid
from gsa.ops.triton.launch import block, check_flag, launch, mixed_dots_mode, slot_options
from gsa.ops.triton.tiles import (
    chunk_span_max, factor_span, load_row, load_rows, load_softmax, mixed_dot, pairwise_column, row_dots,
    sub_block_column, sub_block_span,
)


@triton.jit
def _ds_pass(x, y, A, L, dh, i_c, i_h, scale, o_t, m_t, o_j, m_j, m_a, o_m, m_m, b_et, b_gj, b_ge, b_gl, factored,
             H, HQ, D, M, BT: tl.constexpr,
             BC: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr, SOFTMAX: tl.constexpr, PREC: tl.constexpr,
             FUSED: tl.constexpr, MIX: tl.constexpr):
    G = HQ // H
    p_dh = dh + (i_c.to(tl.int64) * H + i_h) * D * M
    b_xs = tl.zeros([BC, BM], dtype=tl.float32)
    b_xy0 = tl.zeros([BC, BT], dtype=tl.float32)  # FUSED: x_j . y_t of the only query head, from the same loop
    for i_d in range(tl.cdiv(D, BD)):
        o_d = i_d * BD + tl.arange(0, BD)
        m_d = o_d < D
        b_xj = load_rows(x + i_h * D, o_j, m_j, H * D, o_d, m_d)  # [BC, BD]
        b_dh = load_rows(p_dh, o_d, m_d, M, o_m, m_m)  # [BD, BM]
        b_xs = mixed_dot(b_xj, b_dh, b_xs, MIX, PREC)
        if FUSED:
            b_yt = load_rows(y + i_h * D, o_t, m_t, HQ * D, o_d, m_d)  # [BT, BD]
            b_xy0 += tl.dot(b_xj, tl.trans(b_yt), input_precision=PREC)
    b_ds = b_xs * tl.exp(b_gl[None, :] - b_gj)  # [BC, BM]

    b_dec = tl.exp(b_ge[None, :] - b_gj)  # [BC, BM], <= 1 on valid rows
    b_acc = tl.zeros([BC, BM], dtype=tl.float32)
    for i_g in range(G):
        i_hq = i_h * G + i_g
        # x_j . y_t over the chunk, as [BC, BT]: with the 16 key rows as the dot's M (the 16-bit dot then runs as
        # mma.sync). The [BT, BC] orientation ran on the H100 as a wgmma (M = 64), and with 16-bit inputs its
        # ds was ~3e-3 (relative) off the same kernel on float32 copies of the inputs, with every input of this
        # kernel equal to 1e-7 (docs/log.md, "Kernels"): dg, which sums s * ds, carried it at 5x the
        # torch backend's error at T = 2048.
        if FUSED:
            b_xy = b_xy0
        else:
            b_xy = row_dots(x + i_h * D, o_j, m_j, H * D, y + i_hq * D, o_t, m_t, HQ * D, D, BC, BT, BD, PREC)
        if SOFTMAX:
            b_at = load_softmax(A + i_hq * M, L + i_hq * 2, o_t, m_t, HQ * M, 2 * HQ, o_m, m_m)  # [BT, BM]
        else:
            b_at = load_rows(A + i_hq * M, o_t, m_t, HQ * M, o_m, m_m)
        b_ad = tl.where(m_a[:, None], b_at * b_et, 0.0)  # the query rows' weights, decayed to row e (b_et)
        b_xy = tl.where(o_t[None, :] >= o_j[:, None], b_xy, 0.0)  # causal inside the diagonal sub-block
        b_acc += b_dec * tl.dot(b_xy, b_ad, input_precision=PREC)
        if not factored:  # the diagonal sub-block, pairwise
            # y_t . x_j inside the sub-block
            b_yxd = row_dots(y + i_hq * D, o_j, m_j, HQ * D, x + i_h * D, o_j, m_j, H * D, D, BC, BC, BD, PREC)
            if SOFTMAX:
                b_aj = load_softmax(A + i_hq * M, L + i_hq * 2, o_j, m_j, HQ * M, 2 * HQ, o_m, m_m)  # [BC, BM]
            else:
                b_aj = load_rows(A + i_hq * M, o_j, m_j, HQ * M, o_m, m_m)
            o_c = tl.arange(0, BC)
            for jj in range(BC):  # key row j = tj + jj: sum over t >= j of (y_t . x_j) a_t exp(Gl_t - Gl_j)
                b_w = sub_block_column(b_yxd, o_c, jj)[:, None] * b_aj * pairwise_column(b_gj, o_c, m_j, jj)
                b_acc += tl.where((o_c == jj)[:, None], tl.sum(b_w, 0)[None, :], 0.0)
    return b_ds + scale * b_acc


@triton.jit
def _ds_block(q, k, v, do, s, gl, A, L, dA, dGq, dhk, dhv, ds, dG, i_c, i_h, t0, eos, tj, o_m, m_m, scale, span_max,
              H, HQ, K, V, M, BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
              BM: tl.constexpr, SOFTMAX: tl.constexpr, PREC: tl.constexpr,
              FUSED: tl.constexpr, FACTORED: tl.constexpr, MIX: tl.constexpr):
    """ds and dG of the BC key rows from tj (BC = BT: the whole chunk) at slot tile o_m. FACTORED: the caller has
    checked the block's decay span (a whole chunk); else the span test is made here, and a block above it takes the
    diagonal pairwise."""
    last = tl.minimum(t0 + BT, eos) - 1
    e = tl.minimum(tj + BC, eos) - 1
    o_t = t0 + tl.arange(0, BT)
    o_j = tj + tl.arange(0, BC)
    m_t, m_j = o_t < eos, o_j < eos

    b_gj = load_rows(gl + i_h * M, o_j, m_j, H * M, o_m, m_m)  # [BC, BM]
    b_ge = load_row(gl + i_h * M, e, H * M, o_m, m_m)  # [BM]
    b_gl = load_row(gl + i_h * M, last, H * M, o_m, m_m)  # [BM]

    # the diagonal sub-block joins the later ones' dot while its decay span allows (SETTINGS.factor_span), the span
    # over this program's slot tile only: each tile decides for its own slots
    if FACTORED:
        factored = True
    else:
        factored = sub_block_span(b_gj, load_row(gl + i_h * M, tj, H * M, o_m, m_m)) < span_max
    m_a = (o_t >= tl.where(factored, tj, tj + BC)) & m_t  # the query rows the dot takes
    # later sub-blocks (and, factored, the diagonal one from row j on), the decay factored through the key block's
    # last row e: exp(Gl_t - Gl_e) <= 1 after the block, <= exp(span) inside it; taken once for both passes and all
    # query heads of the kv head
    if FACTORED:  # the whole chunk: its key rows are its query rows
        b_gt = b_gj
    else:
        b_gt = load_rows(gl + i_h * M, o_t, m_t, H * M, o_m, m_m)  # [BT, BM]
    b_et = tl.where(m_a[:, None], tl.exp(tl.where(m_a[:, None], b_gt - b_ge[None, :], 0.0)), 0.0)

    b_ds = _ds_pass(k, q, dA, None, dhk, i_c, i_h, scale, o_t, m_t, o_j, m_j, m_a, o_m, m_m, b_et, b_gj, b_ge, b_gl,
                    factored, H, HQ, K, M, BT, BC, BK, BM, False, PREC, FUSED, MIX)
    b_ds += _ds_pass(v, do, A, L, dhv, i_c, i_h, 1.0, o_t, m_t, o_j, m_j, m_a, o_m, m_m, b_et, b_gj, b_ge, b_gl,
                     factored, H, HQ, V, M, BT, BC, BV, BM, SOFTMAX, PREC, FUSED, MIX)

    b_sj = load_rows(s + i_h * M, o_j, m_j, H * M, o_m, m_m).to(tl.float32)  # [BC, BM]
    b_dg = -b_sj * b_ds
    G = HQ // H
    for i_g in range(G):
        b_dg += load_rows(dGq + (i_h * G + i_g) * M, o_j, m_j, HQ * M, o_m, m_m)
    m_jm = m_j[:, None] & m_m[None, :]
    o_jm = o_j[:, None].to(tl.int64) * H * M + i_h * M + o_m[None, :]
    tl.store(ds + o_jm, b_ds.to(ds.dtype.element_ty), mask=m_jm)
    tl.store(dG + o_jm, b_dg, mask=m_jm)


@triton.jit
def chunk_gsa_bwd_kernel_ds(q, k, v, do, s, gl, A, L, dA, dGq, dhk, dhv, ds, dG, cu_seqlens, chunk_indices, scale,
                            H, HQ, K, V, M, span_max, chunk_max,
                            BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                            BM: tl.constexpr, SOFTMAX: tl.constexpr, TILED: tl.constexpr, PREC: tl.constexpr,
                            FUSED: tl.constexpr, WHOLE: tl.constexpr, MIX: tl.constexpr):
    """One program a key sub-block, kv head, chunk and slot tile; WHOLE (launch option): one a chunk, kv head and
    slot tile, whose key rows are one block factored through the chunk's last row while the chunk's decay span (over
    the slot tile) stays under chunk_max (every operand loaded once, every product a [BT, *] dot), else its
    sub-blocks in turn."""
    NC: tl.constexpr = BT // BC
    NJ: tl.constexpr = 1 if WHOLE else NC  # key blocks a chunk on the grid
    if TILED:  # a chunk's sub-blocks and slot tiles adjacent (they re-read its rows of q, k, v, dO, A1)
        i_jm, i_h, i_c = program_tiles(NJ * tl.cdiv(M, BM), H)
        i_j, i_m = i_jm % NJ, i_jm // NJ
    else:  # slot offset 0 at compile time: a run-time one cost the one-tile kernel 112 more spill bytes (sm_90)
        i_j, i_h, i_c = program_tiles(NJ, H)
        i_m = 0
    t0, eos = chunk_bounds(cu_seqlens, chunk_indices, i_c, BT)
    o_m = i_m * BM + tl.arange(0, BM)
    m_m = o_m < M
    if WHOLE:
        last = tl.minimum(t0 + BT, eos) - 1
        span = tl.max(load_row(gl + i_h * M, t0, H * M, o_m, m_m) - load_row(gl + i_h * M, last, H * M, o_m, m_m), 0)
        if span < chunk_max:
            _ds_block(q, k, v, do, s, gl, A, L, dA, dGq, dhk, dhv, ds, dG, i_c, i_h, t0, eos, t0, o_m, m_m, scale,
                      span_max, H, HQ, K, V, M, BT, BT, BK, BV, BM, SOFTMAX, PREC, FUSED, True, MIX)
        else:
            for i_s in range(NC):
                tj = t0 + i_s * BC
                if tj < eos:
                    _ds_block(q, k, v, do, s, gl, A, L, dA, dGq, dhk, dhv, ds, dG, i_c, i_h, t0, eos, tj, o_m, m_m,
                              scale, span_max, H, HQ, K, V, M, BT, BC, BK, BV, BM, SOFTMAX, PREC, FUSED,
                              False, MIX)
    else:
        tj = t0 + i_j * BC
        if tj < eos:
            _ds_block(q, k, v, do, s, gl, A, L, dA, dGq, dhk, dhv, ds, dG, i_c, i_h, t0, eos, tj, o_m, m_m, scale,
                      span_max, H, HQ, K, V, M, BT, BC, BK, BV, BM, SOFTMAX, PREC, FUSED, False, MIX)


def chunk_bwd_ds(q, k, v, do, s, gl, A, L, dA, dGq, dhk, dhv, chunks: Chunks, scale: float, prec: str):
    """ds [TT, H, M] in s's dtype and dG [TT, H, M] float32 (before the reverse cumulative sum over time).
    L [TT, HQ, 2]: A1's rows' softmax statistics (chunk_a.chunk_fwd_a), the second pass reading with softmax(A1);
    None: with A1 itself (a linear read). One program a chunk (launch option
    "WHOLE", the default up to 64 slots; else a 16-row key sub-block), kv head and slot tile
    (SETTINGS.launch["ds"]["BM"] wide).

    q/do: [TT, HQ, K|V], k/v: [TT, H, K|V], s/gl: [TT, H, M], A/dA/dGq: [TT, HQ, M] float32,
    dhk [NT, H, K, M] and dhv [NT, H, V, M]: gradients of the chunk-end states."""
    TT, HQ, K = q.shape
    H, V, M = k.shape[1], v.shape[-1], s.shape[-1]
    # The slot tile: launch.slot_options (up to 64 slots unless SETTINGS.launch sets "BM"). At M = 128 the default is
    # one tile ("ds@m128"): 64-wide tiles spill less compiled for sm_90 (2448 -> 1744 bytes a thread;
    # benchmarks/kernel_resources.py) but re-read the chunk's rows per tile and ran 6% slower on the H100 (settings.py).
    opts = slot_options("ds", M)
    n_m = opts.pop("NM")
    # "FUSED" (a bool): with one query head a kv head, x_j . y_t comes from the D loop that reads x_j for x_j @ dS,
    # one pass over D instead of two; grouped heads keep a loop per query head (the option is dropped there)
    fused = opts.pop("FUSED", False)
    check_flag("ds", "FUSED", fused, "one D loop for both of a pass's products")
    opts["FUSED"] = fused and HQ == H
    # "WHOLE" (a bool; False where the entry leaves it out): one program a chunk instead of a key sub-block
    opts.setdefault("WHOLE", False)
    check_flag("ds", "WHOLE", opts["WHOLE"], "one program a chunk")
    ds = torch.empty(TT, H, M, dtype=s.dtype, device=s.device)
    dG = torch.empty(TT, H, M, dtype=torch.float32, device=s.device)
    grid = tiles_grid((1 if opts["WHOLE"] else BT // BC) * n_m, H, chunks.NT)
    launch(chunk_gsa_bwd_kernel_ds, grid)(q, k, v, do, s, gl, A, L, dA, dGq, dhk, dhv, ds, dG, chunks.cu_seqlens,
                                          chunks.indices, scale, H=H, HQ=HQ, K=K, V=V, M=M, span_max=factor_span(),
                                          chunk_max=chunk_span_max(),
                                          BT=BT, BC=BC, BK=block(K, 64), BV=block(V, 64), SOFTMAX=L is not None,
                                          TILED=n_m > 1, PREC=prec,
                                          MIX=mixed_dots_mode(q.dtype, "ds"), **opts)
    return ds, dG
