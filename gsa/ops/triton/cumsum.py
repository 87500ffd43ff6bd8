"""Gate sums over time: the chunk-local cumulative log gate (forward) and the reverse cumulative sum that turns
dG into dg (backward, docs/algorithm.md, "Backward").

dg_t = sum_{i >= t} dG_i is exact in exact arithmetic, but the per-token dG_i (from the q-side and k-side identity)
cancel almost entirely over long ranges: summed over a whole sequence, the float32 rounding of every term survives
while the result stays small, and dg's error grew with T (7.6x the torch backend's at T = 2048 in float32, ~20x in
bf16 on an H100). So the sum runs only inside each chunk, and what all later tokens contribute is taken exactly at
the chunk boundary: the gradient of the log-decay at the first token of chunk c + 1 is
sum_D H[c + 1] * dH[c] (the state entering chunk c + 1 times the gradient of the state leaving chunk c), over both
passes; the final-state term plays that role after a sequence's last chunk. kernel_dx takes those products per D
tile while it holds dH[c] (chunk_dx.py). With the backward's chunk states stored in the inputs' dtype
(SETTINGS.chunk_states = "input"; "forward" keeps them float32) that product carries the states' rounding: within
1.02-1.06x of the torch backend's dg error in fp16 at T = 65 to 4096 where no final-state cotangent arrives (a
training step), but 2-3.6x near a final-state cotangent at T = 65-130. So with one (chunk.py) the sum runs over the
whole sequence there, as good at short T and degrading with T (1.8x at T = 2048 in fp16)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gsa.ops.triton.chunks import BT, Chunks, chunk_bounds, sequence_bounds
from gsa.ops.triton.launch import block, launch_options, launch
from gsa.ops.triton.tiles import load_rows


# Gates below -GATE_FLOOR are summed as -GATE_FLOOR: the same function in float32, where every decay through such a
# gate, exp(Gl_t - Gl_j) with it inside (j, t], is exp(<= -110) = 0 either way; it keeps g = -inf (alpha = 0, a full
# reset) from making Gl = -inf and the decays -inf - -inf = NaN, and a run of -1e38 gates from overflowing the sum.
GATE_FLOOR = 110.0


@triton.jit
def chunk_gsa_fwd_kernel_cumsum(g, gl, cu_seqlens, chunk_indices, H, M,
                                BT: tl.constexpr, BM: tl.constexpr, FLOOR: tl.constexpr):
    i_c, i_h = tl.program_id(0), tl.program_id(1)
    t0, eos = chunk_bounds(cu_seqlens, chunk_indices, i_c, BT)
    o_t = t0 + tl.arange(0, BT)
    o_m = tl.arange(0, BM)
    m_t, m_m = o_t < eos, o_m < M
    b_g = tl.maximum(load_rows(g + i_h * M, o_t, m_t, H * M, o_m, m_m).to(tl.float32), -FLOOR)  # [BT, BM]
    p_gl = gl + o_t[:, None].to(tl.int64) * H * M + i_h * M + o_m[None, :]
    tl.store(p_gl, tl.cumsum(b_g, axis=0), mask=m_t[:, None] & m_m[None, :])


@triton.jit
def chunk_dg(dG, dg, b_c, o_t, m_t, i_h, H, M, o_m, m_m):
    """dg over one chunk's rows o_t: b_c (what all later chunks give, [BM]) plus the chunk's own dG from each row on.
    Returns the chunk's total dG [BM]."""
    b_x = load_rows(dG + i_h * M, o_t, m_t, H * M, o_m, m_m)  # [BT, BM]
    b_s = tl.sum(b_x, 0)
    b_r = b_c[None, :] + b_s[None, :] - tl.cumsum(b_x, axis=0) + b_x  # sum over i >= t
    p_dg = dg + o_t[:, None].to(tl.int64) * H * M + i_h * M + o_m[None, :]
    tl.store(p_dg, b_r.to(dg.dtype.element_ty), mask=m_t[:, None] & m_m[None, :])
    return b_s


@triton.jit
def chunk_gsa_bwd_kernel_dg_exact(dG, dgt, cross, dg, cu_seqlens, chunk_indices, H, M, NP, part_stride,
                                  BT: tl.constexpr, BM: tl.constexpr, USE_DGT: tl.constexpr):
    """dg with the boundary terms: every chunk on its own (one program per chunk and head). cross holds the
    boundary term in NP parts (one per D tile of each pass, part_stride apart), summed here."""
    i_c, i_h = tl.program_id(0), tl.program_id(1)
    i_n = tl.load(chunk_indices + i_c * 2)
    t0, eos = chunk_bounds(cu_seqlens, chunk_indices, i_c, BT)
    o_t = t0 + tl.arange(0, BT)
    o_m = tl.arange(0, BM)
    m_t, m_m = o_t < eos, o_m < M
    last = t0 + BT >= eos
    # what all later steps give: the boundary term, or after a sequence's last chunk its final-state term
    b_c = tl.zeros([BM], dtype=tl.float32)
    p_c = cross + (i_c.to(tl.int64) * H + i_h) * M + o_m
    for _ in range(NP):  # the pointer advances a part at a time: no int32 product of part index and stride
        b_c += tl.load(p_c, mask=m_m & (not last), other=0)
        p_c += part_stride
    if USE_DGT:
        b_c += tl.load(dgt + (i_n.to(tl.int64) * H + i_h) * M + o_m, mask=m_m & last, other=0)
    chunk_dg(dG, dg, b_c, o_t, m_t, i_h, H, M, o_m, m_m)


@triton.jit
def chunk_gsa_bwd_kernel_dg(dG, dgt, dg, cu_seqlens, H, M, BT: tl.constexpr, BM: tl.constexpr,
                            USE_DGT: tl.constexpr):
    """dg as one running sum over each sequence, last chunk first (one program per sequence and head)."""
    i_nh = tl.program_id(0)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = sequence_bounds(cu_seqlens, i_n)
    NTn = tl.cdiv(eos - bos, BT)
    o_m = tl.arange(0, BM)
    m_m = o_m < M
    b_last = tl.zeros([BM], dtype=tl.float32)  # what follows the sequence's last step: its final-state term
    if USE_DGT:
        b_last += tl.load(dgt + i_nh * M + o_m, mask=m_m, other=0)
    b_run = b_last  # the running sum of dG over all later steps
    for i in range(NTn):
        i_t = NTn - 1 - i
        o_t = bos + i_t * BT + tl.arange(0, BT)
        m_t = o_t < eos
        b_run += chunk_dg(dG, dg, b_run, o_t, m_t, i_h, H, M, o_m, m_m)


def chunk_local_cumsum(g: torch.Tensor, chunks: Chunks) -> torch.Tensor:
    """g: [TT, H, M] log gates -> Gl [TT, H, M] float32, the cumulative sum restarted at every chunk (gates below
    -GATE_FLOOR summed as -GATE_FLOOR)."""
    TT, H, M = g.shape
    gl = torch.empty(TT, H, M, dtype=torch.float32, device=g.device)
    launch(chunk_gsa_fwd_kernel_cumsum, (chunks.NT, H))(g, gl, chunks.cu_seqlens, chunks.indices, H=H, M=M, BT=BT,
                                                BM=block(M, 128), FLOOR=GATE_FLOOR, **launch_options("cumsum"))
    return gl


def reverse_cumsum_dg(dG: torch.Tensor, dgt: torch.Tensor | None, cross: torch.Tensor | None, chunks: Chunks,
                      dtype: torch.dtype) -> torch.Tensor:
    """dG: [TT, H, M] float32 -> dg [TT, H, M] in `dtype`: dg_t = sum_{i >= t} dG_i + dgt (per sequence), with the
    sum over later chunks taken exactly at each chunk boundary (module docstring).

    dgt: [N, H, M] float32, the final-state term added at each sequence's last step (or None).
    cross: [P, nt, H, M] float32, chunk c's boundary term sum_D (Hk[c + 1] dHk[c]) + sum_D (Hv[c + 1] dHv[c]) in P
    parts, one per D tile of each pass (read for every chunk but a sequence's last, and summed here; chunk_dx.py
    takes them), or None: the whole-sequence sum instead."""
    TT, H, M = dG.shape
    dg = torch.empty(TT, H, M, dtype=dtype, device=dG.device)
    meta = dict(H=H, M=M, BT=BT, BM=block(M, 128), USE_DGT=dgt is not None, **launch_options("dg"))
    if cross is not None:  # chunks independent of each other: no walk over the sequence (507 us at B 1, T 16K)
        launch(chunk_gsa_bwd_kernel_dg_exact, (chunks.NT, H))(dG, dgt, cross, dg, chunks.cu_seqlens, chunks.indices,
                                                              NP=cross.shape[0], part_stride=cross.stride(0), **meta)
    else:
        launch(chunk_gsa_bwd_kernel_dg, (chunks.N * H,))(dG, dgt, dg, chunks.cu_seqlens, **meta)
    return dg
