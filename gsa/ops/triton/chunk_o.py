"""Outputs of the second pass (forward) and the query gradient of the first pass (backward).

For a chunk, slot weights a [BT, M], chunk-start state S [D, M], mixing matrix P (chunk_a.py) and values x:
    out = scale * ( (a * exp(Gl)) @ S^T + P @ x ).
Forward: a = softmax(A1), x = v, S = Hv^T, scale 1: out = o. Backward: a = dA1, x = k, S = Hk: out = dq.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gsa.ops.triton.chunks import BT, Chunks, chunk_bounds, program_tiles, row_block, tiles_grid
from gsa.ops.triton.launch import block, cdiv, d_tiles_per_program, launch, launch_options, mixed_dots_mode
from gsa.ops.triton.tiles import load_rows, load_softmax, mixed_dot


@triton.jit
def chunk_gsa_fwd_kernel_o(A, L, gl, P, x, h, o, cu_seqlens, chunk_indices, scale, H, HQ, D, M,
                           BT: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr, ND: tl.constexpr, RB: tl.constexpr,
                           SOFTMAX: tl.constexpr, PREC: tl.constexpr, MIX: tl.constexpr):
    """Program (ND D tiles, RB-row block, query head, chunk): out over D tiles [i * ND, (i + 1) * ND) of RB rows of
    one chunk; the decayed slot weights and P's rows are built once for those tiles. A row block reads x's chunk
    rows up to its own last row (P is 0 above the diagonal)."""
    NR: tl.constexpr = BT // RB
    i_0, i_hq, i_c = program_tiles(tl.cdiv(tl.cdiv(D, BD), ND) * NR, HQ)
    i_dp, i_r = i_0 // NR, i_0 % NR
    i_h = i_hq // (HQ // H)
    t0, eos = chunk_bounds(cu_seqlens, chunk_indices, i_c, BT)
    o_t = t0 + i_r * RB + tl.arange(0, RB)  # the block's rows
    o_c = tl.arange(0, BT)  # the chunk's rows j, as P's columns
    o_m = tl.arange(0, BM)
    m_t, m_m = o_t < eos, o_m < M
    m_c = (o_c < (i_r + 1) * RB) & (t0 + o_c < eos)
    m_tm = m_t[:, None] & m_m[None, :]

    if SOFTMAX:  # softmax(A1) from A1 and its rows' statistics L
        b_a = load_softmax(A + i_hq * M, L + i_hq * 2, o_t, m_t, HQ * M, 2 * HQ, o_m, m_m)  # [RB, BM]
    else:
        b_a = load_rows(A + i_hq * M, o_t, m_t, HQ * M, o_m, m_m)
    b_g = load_rows(gl + i_h * M, o_t, m_t, H * M, o_m, m_m)  # [RB, BM]
    b_w = tl.where(m_tm, b_a * tl.exp(b_g), 0.0)  # [RB, BM]
    b_p = load_rows(P + i_hq * BT, o_t, m_t, HQ * BT, o_c, m_c)  # [RB, BT]
    for i_i in range(ND):
        o_d = (i_dp * ND + i_i) * BD + tl.arange(0, BD)
        m_d = o_d < D  # all false past the last tile (ND not dividing the tile count)
        # loaded as stored ([BD, BM], contiguous along M) and transposed in registers: coalesced
        b_h = tl.trans(load_rows(h + (i_c.to(tl.int64) * H + i_h) * D * M, o_d, m_d, M, o_m, m_m))
        b_o = mixed_dot(b_w, b_h, None, MIX, PREC)  # [RB, BD]
        b_x = load_rows(x + i_h * D, t0 + o_c, m_c, H * D, o_d, m_d)  # [BT, BD]
        b_o = mixed_dot(b_p, b_x, b_o, MIX, PREC)
        p_o = o + o_t[:, None].to(tl.int64) * HQ * D + i_hq * D + o_d[None, :]
        tl.store(p_o, (b_o * scale).to(o.dtype.element_ty), mask=m_t[:, None] & m_d[None, :])


def chunk_o(A: torch.Tensor, L: torch.Tensor | None, gl: torch.Tensor, P: torch.Tensor, x: torch.Tensor,
            h: torch.Tensor, chunks: Chunks, scale: float, dtype: torch.dtype, prec: str) -> torch.Tensor:
    """[TT, HQ, D] in `dtype` from A [TT, HQ, M] (A1, read as softmax(A1) where L [TT, HQ, 2], its rows'
    statistics (chunk_a.chunk_fwd_a), is given; else A1 or dA1 as they are), gl [TT, H, M], P [TT, HQ, BT],
    x [TT, H, D] and chunk-start states h [NT, H, D, M]: o (x = v, h = Hv^T) or dq (x = k, h = Hk)."""
    TT, HQ, M = A.shape
    H, D = x.shape[1], x.shape[2]
    out = torch.empty(TT, HQ, D, dtype=dtype, device=x.device)
    opts = launch_options("o", slots=M, BD=block(D, 64))
    RB = row_block("o", opts, 16)
    n_tiles = cdiv(D, opts["BD"])
    ND = d_tiles_per_program("o", opts, n_tiles, HQ * chunks.NT * (BT // RB), x.device)
    grid = tiles_grid(cdiv(n_tiles, ND) * (BT // RB), HQ, chunks.NT)
    launch(chunk_gsa_fwd_kernel_o, grid)(A, L, gl, P, x, h, out, chunks.cu_seqlens, chunks.indices, scale, H, HQ, D, M,
                                 BT=BT, BM=block(M, 128), ND=ND, RB=RB, SOFTMAX=L is not None, PREC=prec,
                                 MIX=mixed_dots_mode(x.dtype, "o"), **opts)
    return out
