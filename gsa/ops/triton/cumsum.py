"""Gate sums over time: the chunk-local cumulative log gate (forward) and the reverse cumulative sum that turns
dG into dg (backward, GSA_SPEC.md section 3).

dg_t = sum_{i >= t} dG_i is exact in exact arithmetic, but the per-token dG_i (from the q-side and k-side identity)
cancel almost entirely over long ranges: summed over a whole sequence, the float32 rounding of every term survives
while the result stays small, and dg's error grew with T (7.6x the torch backend's at T = 2048 in float32, ~20x in
bf16 on an H100). So the sum runs only inside each chunk, and what all later tokens contribute is taken exactly at
the chunk boundary: the gradient of the log-decay at the first token of chunk c + 1 is
sum_D H[c + 1] * dH[c] (the state entering chunk c + 1 times the gradient of the state leaving chunk c), over both
passes; the final-state term plays that role after a sequence's last chunk. With chunk states stored in the
inputs' dtype (CHUNK_STATES = "input") that product would carry the states' rounding (3.6x the torch backend's dg
error in fp16 at T = 65), so there the sum still runs over the whole sequence, exact at short T and degrading
with T as before."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gsa.ops.triton.utils import BT, Chunks, block, chunk_bounds, launch_options, launch, load_rows, sequence_bounds


@triton.jit
def chunk_gsa_fwd_kernel_cumsum(g, gl, cu_seqlens, chunk_indices, H, M,
                                BT: tl.constexpr, BM: tl.constexpr):
    i_c, i_h = tl.program_id(0), tl.program_id(1)
    t0, eos = chunk_bounds(cu_seqlens, chunk_indices, i_c, BT)
    o_t = t0 + tl.arange(0, BT)
    o_m = tl.arange(0, BM)
    m_t, m_m = o_t < eos, o_m < M
    b_g = load_rows(g + i_h * M, o_t, m_t, H * M, o_m, m_m).to(tl.float32)  # [BT, BM]
    p_gl = gl + o_t[:, None].to(tl.int64) * H * M + i_h * M + o_m[None, :]
    tl.store(p_gl, tl.cumsum(b_g, axis=0), mask=m_t[:, None] & m_m[None, :])


@triton.jit
def _column_dots(h, dh, i_next, i_this, D, M, o_m, m_m, BD: tl.constexpr):
    """sum_D h[i_next] * dh[i_this] per slot, [BM] float32, for states laid out [nt * H, D, M]."""
    b_c = tl.zeros(o_m.shape, dtype=tl.float32)
    for d0 in range(0, D, BD):
        o_d = d0 + tl.arange(0, BD)
        m = (o_d < D)[:, None] & m_m[None, :]
        p = o_d[:, None] * M + o_m[None, :]
        b_h = tl.load(h + i_next * D * M + p, mask=m, other=0).to(tl.float32)
        b_c += tl.sum(b_h * tl.load(dh + i_this * D * M + p, mask=m, other=0), 0)
    return b_c


@triton.jit
def chunk_gsa_bwd_kernel_cross(hk, dhk, hv, dhv, cross, H, K, V, M, BD: tl.constexpr, BM: tl.constexpr):
    """cross[c] = sum_D hk[c + 1] * dhk[c] + sum_D hv[c + 1] * dhv[c]: one program per (chunk, kv head)."""
    i_c, i_h = tl.program_id(0), tl.program_id(1)
    o_m = tl.arange(0, BM)
    m_m = o_m < M
    i_next = ((i_c + 1) * H + i_h).to(tl.int64)
    i_this = (i_c * H + i_h).to(tl.int64)
    b_c = _column_dots(hk, dhk, i_next, i_this, K, M, o_m, m_m, BD) + _column_dots(hv, dhv, i_next, i_this, V, M,
                                                                                  o_m, m_m, BD)
    tl.store(cross + i_this * M + o_m, b_c, mask=m_m)


@triton.jit
def chunk_gsa_bwd_kernel_dg(dG, dgt, cross, dg, cu_seqlens, chunk_offsets, H, M, BT: tl.constexpr,
                            BM: tl.constexpr, USE_DGT: tl.constexpr, USE_CROSS: tl.constexpr):
    i_nh = tl.program_id(0)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = sequence_bounds(cu_seqlens, i_n)
    i_c0 = tl.load(chunk_offsets + i_n).to(tl.int64)
    NTn = tl.cdiv(eos - bos, BT)
    o_m = tl.arange(0, BM)
    m_m = o_m < M
    b_last = tl.zeros([BM], dtype=tl.float32)  # what follows the sequence's last step: its final-state term
    if USE_DGT:
        b_last += tl.load(dgt + i_nh * M + o_m, mask=m_m, other=0)
    b_run = b_last  # without USE_CROSS: the running sum of dG over all later steps
    for i in range(NTn):
        i_t = NTn - 1 - i
        o_t = bos + i_t * BT + tl.arange(0, BT)
        m_t = o_t < eos
        b_x = load_rows(dG + i_h * M, o_t, m_t, H * M, o_m, m_m)  # [BT, BM]
        b_s = tl.sum(b_x, 0)
        if USE_CROSS:  # the exact sum of dG over all later chunks (module docstring)
            b_c = tl.load(cross + ((i_c0 + i_t) * H + i_h) * M + o_m, mask=m_m & (i_t < NTn - 1), other=0)
            b_c = tl.where(i_t == NTn - 1, b_last, b_c)
        else:
            b_c = b_run
        b_r = b_c[None, :] + b_s[None, :] - tl.cumsum(b_x, axis=0) + b_x  # sum over i >= t
        p_dg = dg + o_t[:, None].to(tl.int64) * H * M + i_h * M + o_m[None, :]
        tl.store(p_dg, b_r.to(dg.dtype.element_ty), mask=m_t[:, None] & m_m[None, :])
        b_run += b_s


def chunk_local_cumsum(g: torch.Tensor, chunks: Chunks) -> torch.Tensor:
    """g: [TT, H, M] log gates -> Gl [TT, H, M] float32, the cumulative sum restarted at every chunk."""
    TT, H, M = g.shape
    gl = torch.empty(TT, H, M, dtype=torch.float32, device=g.device)
    launch(chunk_gsa_fwd_kernel_cumsum, (chunks.NT, H))(g, gl, chunks.cu_seqlens, chunks.indices, H=H, M=M, BT=BT,
                                                BM=block(M, 128), **launch_options("cumsum"))
    return gl


def reverse_cumsum_dg(dG: torch.Tensor, dgt: torch.Tensor | None, states: tuple[torch.Tensor, ...],
                      chunks: Chunks, dtype: torch.dtype) -> torch.Tensor:
    """dG: [TT, H, M] float32 -> dg [TT, H, M] in `dtype`: dg_t = sum_{i >= t} dG_i + dgt (per sequence), with the
    sum over later chunks taken exactly at each chunk boundary (module docstring).

    dgt: [N, H, M] float32, the final-state term added at each sequence's last step (or None).
    states: (hk, dhk, hv, dhv): the chunk-start states [nt, H, D, M] of both passes and the gradients of the
    chunk-end states, same layout (as chunk_fwd_h and chunk_bwd_dh return them)."""
    TT, H, M = dG.shape
    hk, dhk, hv, dhv = states
    K, V = hk.shape[2], hv.shape[2]
    BM = block(M, 128)
    use_cross = hk.dtype == torch.float32 and hv.dtype == torch.float32
    cross = dG.new_empty(max(chunks.NT - 1, 1), H, M)
    if use_cross and chunks.NT > 1:
        launch(chunk_gsa_bwd_kernel_cross, (chunks.NT - 1, H))(hk, dhk, hv, dhv, cross, H=H, K=K, V=V, M=M,
                                                        BD=block(max(K, V), 32), BM=BM, **launch_options("cross"))
    dg = torch.empty(TT, H, M, dtype=dtype, device=dG.device)
    launch(chunk_gsa_bwd_kernel_dg, (chunks.N * H,))(dG, dgt, cross, dg, chunks.cu_seqlens, chunks.offsets, H=H, M=M,
                                                     BT=BT, BM=BM, USE_DGT=dgt is not None, USE_CROSS=use_cross,
                                                     **launch_options("dg"))
    return dg
