"""Key-side gradients dk (first pass) and dv (second pass).

For a chunk, with the gradient dS [D, M] of the state at the chunk's END and the mixing matrices P (chunk_p.py):
    dx = (s * exp(Gl_last - Gl)) @ dS^T + scale * sum_{query heads} P^T @ y.
dk: P from dA1, y = q, dS = dHk, the pass's scale. dv: P from softmax(A1), y = dO, dS = dHv^T, scale 1.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gsa.ops.triton.utils import (
    BT, Chunks, block, chunk_bounds, launch_options, launch, load_row, load_rows, program_tiles, tiles_grid,
)


@triton.jit
def chunk_gsa_bwd_kernel_dx(P, y, s, gl, dh, dx, cu_seqlens, chunk_indices, scale, H, HQ, D, M,
                            BT: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr, PREC: tl.constexpr):
    i_d, i_h, i_c = program_tiles(tl.cdiv(D, BD), H)
    G = HQ // H
    t0, eos = chunk_bounds(cu_seqlens, chunk_indices, i_c, BT)
    last = tl.minimum(t0 + BT, eos) - 1
    o_t = t0 + tl.arange(0, BT)
    o_c = tl.arange(0, BT)
    o_m = tl.arange(0, BM)
    o_d = i_d * BD + tl.arange(0, BD)
    m_t, m_m, m_d = o_t < eos, o_m < M, o_d < D

    b_g = load_rows(gl + i_h * M, o_t, m_t, H * M, o_m, m_m)  # [BT, BM]
    b_gl = load_row(gl + i_h * M, last, H * M, o_m, m_m)  # [BM]
    b_s = load_rows(s + i_h * M, o_t, m_t, H * M, o_m, m_m).to(tl.float32)  # [BT, BM]
    b_sd = tl.where(m_t[:, None], b_s * tl.exp(b_gl[None, :] - b_g), 0.0)
    # loads as stored (contiguous along the last dim) and transposes in registers: coalesced
    b_dh = tl.trans(load_rows(dh + (i_c.to(tl.int64) * H + i_h) * D * M, o_d, m_d, M, o_m, m_m))  # [BM, BD]
    b_dx = tl.dot(b_sd, b_dh, input_precision=PREC)  # [BT, BD]
    b_acc = tl.zeros([BT, BD], dtype=tl.float32)
    for i_g in range(G):
        i_hq = i_h * G + i_g
        b_pt = tl.trans(load_rows(P + i_hq * BT, o_t, m_t, HQ * BT, o_c, o_c < BT))  # [BT (j), BT (t)]
        b_y = load_rows(y + i_hq * D, o_t, m_t, HQ * D, o_d, m_d).to(tl.float32)  # [BT, BD]
        b_acc += tl.dot(b_pt, b_y, input_precision=PREC)
    b_dx += scale * b_acc
    p_dx = dx + o_t[:, None].to(tl.int64) * H * D + i_h * D + o_d[None, :]
    tl.store(p_dx, b_dx.to(dx.dtype.element_ty), mask=m_t[:, None] & m_d[None, :])


def chunk_bwd_dx(P: torch.Tensor, y: torch.Tensor, s: torch.Tensor, gl: torch.Tensor, dh: torch.Tensor,
                 chunks: Chunks, scale: float, dtype: torch.dtype, prec: str) -> torch.Tensor:
    """dk or dv [TT, H, D] in `dtype`. P: [TT, HQ, BT] (from dA1, or from softmax(A1)), y: [TT, HQ, D] (q or dO),
    s/gl: [TT, H, M], dh: [NT, H, D, M] gradients of the chunk-end states."""
    TT, HQ, D = y.shape
    H, M = s.shape[1], s.shape[2]
    dx = torch.empty(TT, H, D, dtype=dtype, device=y.device)
    opts = launch_options("dx", BD=block(D, 64))
    grid = tiles_grid(triton.cdiv(D, opts["BD"]), H, chunks.NT)
    launch(chunk_gsa_bwd_kernel_dx, grid)(P, y, s, gl, dh, dx, chunks.cu_seqlens, chunks.indices, scale, H, HQ, D, M,
                                  BT=BT, BM=block(M, 128), PREC=prec, **opts)
    return dx
