"""A pass's intra-chunk products a_t . b_j, ahead of kernel_a (SETTINGS.products_ahead).

kernel_a's D loop (chunk_a.py) takes two products of a chunk's rows a_t: a_t @ S with the chunk-start state, which
waits for the state walk, and a_t . b_j over the chunk's rows, which does not. Taken here, on the second stream
beside the walk (streams.py), they leave kernel_a a D loop over a and S alone; each of its BC-row sub-block programs
then reads its [BC, BT] rows of the products (float32) instead of the chunk's [BT, D] rows of b: at D = 512, 4 KB
instead of 64 KB, read by each of a chunk's four sub-block programs.
Forward: a = q, b = k (the first pass's scores). Backward: a = dO, b = v (kernel_a's dp).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gsa.ops.triton.chunks import BT, Chunks, chunk_bounds, program_tiles, tiles_grid
from gsa.ops.triton.launch import block, launch, launch_options
from gsa.ops.triton.settings import SETTINGS
from gsa.ops.triton.streams import Side, launching
from gsa.ops.triton.tiles import row_dots


@triton.jit
def chunk_gsa_kernel_ab(a, b, AB, cu_seqlens, chunk_indices, H, HQ, D,
                        BT: tl.constexpr, BD: tl.constexpr, PREC: tl.constexpr):
    """Program (query head, chunk): AB[t, j - t0] = a_t . b_j for the chunk's rows t and j <= t (0 above the
    diagonal and past the sequence's end)."""
    _, i_hq, i_c = program_tiles(1, HQ)
    i_h = i_hq // (HQ // H)
    t0, eos = chunk_bounds(cu_seqlens, chunk_indices, i_c, BT)
    o_t = t0 + tl.arange(0, BT)
    m_t = o_t < eos
    b_ab = row_dots(a + i_hq * D, o_t, m_t, HQ * D, b + i_h * D, o_t, m_t, H * D, D, BT, BT, BD, PREC)  # [BT, BT]
    o_c = tl.arange(0, BT)
    b_ab = tl.where(o_c[None, :] <= o_c[:, None], b_ab, 0.0)
    tl.store(AB + o_t[:, None].to(tl.int64) * HQ * BT + i_hq * BT + o_c[None, :], b_ab, mask=m_t[:, None])


def products_ahead(D: int, rows: int) -> bool:
    """Whether the op takes its intra-chunk products ahead of kernel_a (SETTINGS.products_ahead; None: for head
    dims D over 128, where kernel_a runs sub-block programs, and ops of at least SETTINGS.overlap_min_rows query
    rows B * T * HQ, whose products can run beside the state walks)."""
    mode = SETTINGS.products_ahead
    if mode is None:
        return D > 128 and rows >= SETTINGS.overlap_min_rows
    if not isinstance(mode, bool):
        raise ValueError(f"SETTINGS.products_ahead must be None, True or False, got {mode!r}")
    return mode


def chunk_ab(a: torch.Tensor, b: torch.Tensor, chunks: Chunks, prec: str, side: Side | None = None) -> torch.Tensor:
    """[TT, HQ, BT] float32: row t holds a_t . b_j for the rows j of its chunk (column j - t0), j <= t, else 0.
    a: [TT, HQ, D], b: [TT, H, D]. side: launch on this second stream (the caller waits for it, streams.mark and
    streams.wait, before kernel_a reads the result)."""
    TT, HQ, D = a.shape
    H = b.shape[1]
    AB = torch.empty(TT, HQ, BT, dtype=torch.float32, device=a.device)
    with launching(side):
        launch(chunk_gsa_kernel_ab, tiles_grid(1, HQ, chunks.NT))(
            a, b, AB, chunks.cu_seqlens, chunks.indices, H, HQ, D, BT=BT, BD=block(D, 64), PREC=prec,
            **launch_options("ab"))
    return AB
