"""Key-side gradients dk (first pass) and dv (second pass).

For a chunk, with the gradient dS [D, M] of the state at the chunk's END and the mixing matrices P (chunk_a.py):
    dx = (s * exp(Gl_last - Gl)) @ dS^T + scale * sum_{query heads} P^T @ y.
dk: P from dA1, y = q, dS = dHk, the pass's scale. dv: P from softmax(A1), y = dO, dS = dHv^T, scale 1.

Given the pass's chunk-start states S, a program also takes dg's chunk-boundary term (cumsum.py) over its D tile,
sum_D S[c + 1] * dS[c], from the dS tile it loads anyway: a separate kernel read all four state tensors back for it
(~535 MB, 179 us at the 1.3B shape on the H100; inside the sequential kernel_dh it cost more than that;
docs/log.md, "Kernels").
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gsa.ops.triton.chunks import BT, Chunks, chunk_bounds, program_tiles, row_block, tiles_grid
from gsa.ops.triton.launch import block, cdiv, d_tiles_per_program, launch, launch_options, mixed_dots_mode
from gsa.ops.triton.tiles import load_row, load_rows, mixed_dot


@triton.jit
def chunk_gsa_bwd_kernel_dx(P, y, s, gl, dh, dx, h, cross, cu_seqlens, chunk_indices, scale, H, HQ, D, M, NT,
                            BT: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr, ND: tl.constexpr, RB: tl.constexpr,
                            ONE_GROUP: tl.constexpr, CROSS: tl.constexpr, PREC: tl.constexpr,
                            MIX: tl.constexpr):
    """Program (ND D tiles, RB-row block, kv head, chunk): dx of RB key rows j over D tiles [i * ND, (i + 1) * ND) of
    one chunk. What does not depend on D (the decayed slot weights; P's columns with one query head a kv head) is
    built once for those tiles. A row block reads the query rows t from its own first row on (P[t, j] is 0 for
    t < j); the first row block also writes the boundary term's parts."""
    NR: tl.constexpr = BT // RB
    NDT = tl.cdiv(D, BD)
    i_0, i_h, i_c = program_tiles(tl.cdiv(NDT, ND) * NR, H)
    i_dp, i_r = i_0 // NR, i_0 % NR
    G = HQ // H
    t0, eos = chunk_bounds(cu_seqlens, chunk_indices, i_c, BT)
    last = tl.minimum(t0 + BT, eos) - 1
    o_j = t0 + i_r * RB + tl.arange(0, RB)  # the block's key rows: the rows of dx it writes
    o_c = tl.arange(0, BT)  # the chunk's query rows t, as P's rows
    o_m = tl.arange(0, BM)
    m_j, m_m = o_j < eos, o_m < M
    m_c = (o_c >= i_r * RB) & (t0 + o_c < eos)
    o_pj = i_r * RB + tl.arange(0, RB)  # the block's rows as P's columns

    b_g = load_rows(gl + i_h * M, o_j, m_j, H * M, o_m, m_m)  # [RB, BM]
    b_gl = load_row(gl + i_h * M, last, H * M, o_m, m_m)  # [BM]
    b_s = load_rows(s + i_h * M, o_j, m_j, H * M, o_m, m_m).to(tl.float32)  # [RB, BM]
    b_sd = tl.where(m_j[:, None], b_s * tl.exp(b_gl[None, :] - b_g), 0.0)
    if ONE_GROUP:
        b_pt = tl.trans(load_rows(P + i_h * BT, t0 + o_c, m_c, HQ * BT, o_pj, o_pj < BT))  # [RB (j), BT (t)]
    for i_i in range(ND):
        i_d = i_dp * ND + i_i
        o_d = i_d * BD + tl.arange(0, BD)
        m_d = o_d < D  # all false past the last tile (ND not dividing the tile count)
        # loads as stored (contiguous along the last dim) and transposes in registers: coalesced.
        # float32 in registers whatever the storage (SETTINGS.state_grads): the boundary term below sums products
        b_dh = load_rows(dh + (i_c.to(tl.int64) * H + i_h) * D * M, o_d, m_d, M, o_m, m_m).to(tl.float32)
        if CROSS:
            if i_r == 0:
                if t0 + BT < eos:  # a sequence's last chunk has no next state: its final-state term stands there
                    b_hn = load_rows(h + ((i_c + 1).to(tl.int64) * H + i_h) * D * M, o_d, m_d, M, o_m, m_m)
                    p_x = cross + ((i_d * NT + i_c).to(tl.int64) * H + i_h) * M + o_m
                    tl.store(p_x, tl.sum(b_hn * b_dh, 0), mask=m_m & (i_d < NDT))
        b_dx = tl.dot(b_sd, tl.trans(b_dh), input_precision=PREC)  # [RB, BD]
        if ONE_GROUP:
            b_y = load_rows(y + i_h * D, t0 + o_c, m_c, HQ * D, o_d, m_d)  # [BT, BD]
            b_acc = mixed_dot(b_pt, b_y, None, MIX, PREC)
        else:
            b_acc = tl.zeros([RB, BD], dtype=tl.float32)
            for i_g in range(G):
                i_hq = i_h * G + i_g
                b_pq = tl.trans(load_rows(P + i_hq * BT, t0 + o_c, m_c, HQ * BT, o_pj, o_pj < BT))  # [RB, BT]
                b_y = load_rows(y + i_hq * D, t0 + o_c, m_c, HQ * D, o_d, m_d)  # [BT, BD]
                b_acc = mixed_dot(b_pq, b_y, b_acc, MIX, PREC)
        b_dx += scale * b_acc
        p_dx = dx + o_j[:, None].to(tl.int64) * H * D + i_h * D + o_d[None, :]
        tl.store(p_dx, b_dx.to(dx.dtype.element_ty), mask=m_j[:, None] & m_d[None, :])


def dx_options(D: int, M: int) -> dict:
    return launch_options("dx", slots=M, BD=block(D, 64))


def dx_tiles(D: int, M: int) -> int:
    """How many D tiles kernel_dx splits D into: the leading size of its boundary-term parts."""
    return cdiv(D, dx_options(D, M)["BD"])


def chunk_bwd_dx(P: torch.Tensor, y: torch.Tensor, s: torch.Tensor, gl: torch.Tensor, dh: torch.Tensor,
                 chunks: Chunks, scale: float, dtype: torch.dtype, prec: str, h: torch.Tensor | None = None,
                 cross: torch.Tensor | None = None) -> torch.Tensor:
    """dk or dv [TT, H, D] in `dtype`. P: [TT, HQ, BT] (from dA1, or from softmax(A1)), y: [TT, HQ, D] (q or dO),
    s/gl: [TT, H, M], dh: [nt, H, D, M] gradients of the chunk-end states.

    With h (the pass's chunk-start states [nt, H, D, M], float32 or as SETTINGS.chunk_states stores them) and cross
    ([dx_tiles(D, M), nt, H, M] float32, a contiguous buffer), also writes cross[i, c] = sum over D tile i of
    h[c + 1] * dh[c] for every chunk c that is not its sequence's last (those entries are left as they were).
    Launch option "RB" (0: the whole chunk): the key rows a program takes (chunks.row_block)."""
    TT, HQ, D = y.shape
    H, M = s.shape[1], s.shape[2]
    if (h is None) != (cross is None):
        raise ValueError("chunk_bwd_dx: give both h and cross, or neither")
    dx = torch.empty(TT, H, D, dtype=dtype, device=y.device)
    opts = dx_options(D, M)
    RB = row_block("dx", opts, 16)
    n_tiles = cdiv(D, opts["BD"])
    ND = d_tiles_per_program("dx", opts, n_tiles, H * chunks.NT * (BT // RB), y.device)
    grid = tiles_grid(cdiv(n_tiles, ND) * (BT // RB), H, chunks.NT)
    launch(chunk_gsa_bwd_kernel_dx, grid)(P, y, s, gl, dh, dx, h, cross, chunks.cu_seqlens, chunks.indices, scale,
                                  H, HQ, D, M, dh.shape[0], BT=BT, BM=block(M, 128), ND=ND, RB=RB,
                                  ONE_GROUP=HQ == H, CROSS=h is not None, PREC=prec,
                                  MIX=mixed_dots_mode(y.dtype, "dx"), **opts)
    return dx
