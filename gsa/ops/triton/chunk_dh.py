"""Gradients of the chunk-boundary states (backward), for either pass.

Per chunk, in reverse: dS <- dS * exp(Gl_last)[None, :] + scale * sum_{query heads} y^T @ (a * exp(Gl)), with
(y, a) = (q, dA1) for Hk and (dO, softmax(A1)) for Hv^T. The stored dS of a chunk is the gradient of the state
at its END; what is left after the first chunk is the initial state's gradient.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gsa.ops.triton.chunk_h import (
    add_carry, carry_in, segment_range, state_strides, state_tile_offsets, store_segment, walk_plan,
)
from gsa.ops.triton.chunks import BT, Chunks
from gsa.ops.triton.launch import launch, state_dots_mode
from gsa.ops.triton.settings import SETTINGS
from gsa.ops.triton.streams import Side, launching
from gsa.ops.triton.tiles import load_row, load_rows, load_softmax, state_product


@triton.jit
def kernel_dh_step(y, A, L, gl, dh, b_dh, b_gs, i_t, i_c0, i_h, bos, eos, scale, H, HQ, D, M, o_d, o_m, m_d, m_m, m_dm,
                   o_h, BT: tl.constexpr, SOFTMAX: tl.constexpr,
                   PREC: tl.constexpr, DOTS: tl.constexpr, MASK_T: tl.constexpr, EVEN: tl.constexpr):
    """One chunk of the reverse walk (the loop body of chunk_gsa_bwd_kernel_dh): store the gradient of its end state,
    then dS <- dS * exp(Gl_last) + sum over query heads of y^T (a * scale * exp(Gl)). MASK_T: the chunk may end past
    its sequence; else the time mask is a constant the compiler drops, as are m_d / m_m where the caller passes
    constants (EVEN)."""
    G = HQ // H
    p_dh = dh + ((i_c0 + i_t) * H + i_h) * D * M + o_h
    if EVEN:
        tl.store(p_dh, b_dh.to(dh.dtype.element_ty))
    else:
        tl.store(p_dh, b_dh.to(dh.dtype.element_ty), mask=m_dm)
    o_t = bos + i_t * BT + tl.arange(0, BT)
    if MASK_T:
        m_t = o_t < eos
    else:
        m_t = tl.full([BT], 1, tl.int1)
    last = tl.minimum(bos + i_t * BT + BT, eos) - 1
    m_tm = m_t[:, None] & m_m[None, :]
    b_g = load_rows(gl + i_h * M, o_t, m_t, H * M, o_m, m_m)  # [BT, BM]
    b_gl = load_row(gl + i_h * M, last, H * M, o_m, m_m)  # [BM]
    b_e = tl.where(m_tm, tl.exp(b_g), 0.0)
    b_dh = b_dh * tl.exp(b_gl)[None, :]
    for i_g in range(G):
        i_hq = i_h * G + i_g
        if SOFTMAX:
            b_a = load_softmax(A + i_hq * M, L + i_hq * 2, o_t, m_t, HQ * M, 2 * HQ, o_m, m_m)  # [BT, BM]
        else:
            b_a = load_rows(A + i_hq * M, o_t, m_t, HQ * M, o_m, m_m)
        b_y = load_rows(y + i_hq * D, o_t, m_t, HQ * D, o_d, m_d)  # [BT, BD]
        b_dh = state_product(b_y, b_a * (scale * b_e), b_dh, DOTS, PREC)
    return b_dh, b_gs + b_gl


@triton.jit
def chunk_gsa_bwd_kernel_dh(y, A, L, gl, dh, dht, dh0, seg_h, seg_g, cu_seqlens, chunk_offsets, scale, stride_sd,
                            stride_sm, H, HQ, D, M, SEG, NS,
                            BT: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr, NM: tl.constexpr,
                            SOFTMAX: tl.constexpr, USE_DHT: tl.constexpr, STORE_DH0: tl.constexpr,
                            SEGMENTED: tl.constexpr, PREC: tl.constexpr, DOTS: tl.constexpr, SPLIT: tl.constexpr,
                            EVEN: tl.constexpr):
    """Program (D tile x slot tile, sequence x head, segment): chunks [i_s * SEG, (i_s + 1) * SEG) of its sequence,
    last first, from the final-state cotangent (the last segment) or from zero (the carry kernel adds what later
    segments give). SEGMENTED: also store the segment's walked-out gradient and total log decay (chunk_h.py,
    state_segments). SOFTMAX: softmax(A1) from A1 and L, the rows' statistics over all slots (chunk_a.py), so a slot
    tile needs no other tile's scores. DOTS: the product's operands (launch.state_dots_mode). SPLIT (launch
    option, default off): a partial last chunk takes the masked step (kernel_dh_step), then the chunks that end
    inside the sequence take it with constant masks over time, and over D and slots too where EVEN (D and M whole
    numbers of tiles). Else every chunk masked."""
    i_nh, i_s = tl.program_id(1), tl.program_id(2)
    i_h, bos, eos, i_c0, NTn, t_lo, t_hi = segment_range(cu_seqlens, chunk_offsets, i_nh, i_s, H, SEG, BT)
    if t_lo >= NTn:
        return
    i_d, o_d, o_m, m_d, m_m, m_dm, o_h = state_tile_offsets(D, M, BD, BM, NM)
    o_s = o_d[:, None] * stride_sd + o_m[None, :] * stride_sm

    b_dh = tl.zeros([BD, BM], dtype=tl.float32)  # [BD, BM]
    if USE_DHT:
        if t_hi == NTn:
            b_dh += tl.load(dht + i_nh.to(tl.int64) * D * M + o_s, mask=m_dm, other=0)
    b_gs = tl.zeros([BM], dtype=tl.float32)  # the segment's log decay so far
    if SPLIT:
        t_full = tl.minimum(t_hi, (eos - bos) // BT)  # the segment's chunks before t_full end inside the sequence
        if t_full < t_hi:  # the sequence's partial last chunk, first in the reverse walk
            b_dh, b_gs = kernel_dh_step(y, A, L, gl, dh, b_dh, b_gs, t_full, i_c0, i_h, bos, eos, scale, H, HQ, D, M,
                                        o_d, o_m, m_d, m_m, m_dm, o_h, BT, SOFTMAX, PREC, DOTS, True, EVEN)
        if EVEN:  # constant masks: the compiler drops them
            m_d1 = tl.full([BD], 1, tl.int1)
            m_m1 = tl.full([BM], 1, tl.int1)
        else:
            m_d1 = m_d
            m_m1 = m_m
        for i in range(t_full - t_lo):
            b_dh, b_gs = kernel_dh_step(y, A, L, gl, dh, b_dh, b_gs, t_full - 1 - i, i_c0, i_h, bos, eos, scale, H, HQ,
                                        D, M, o_d, o_m, m_d1, m_m1, m_dm, o_h, BT, SOFTMAX, PREC, DOTS, False,
                                        EVEN)
    else:  # every chunk masked
        for i in range(t_hi - t_lo):
            b_dh, b_gs = kernel_dh_step(y, A, L, gl, dh, b_dh, b_gs, t_hi - 1 - i, i_c0, i_h, bos, eos, scale, H, HQ,
                                        D, M, o_d, o_m, m_d, m_m, m_dm, o_h, BT, SOFTMAX, PREC, DOTS, True, False)
    if SEGMENTED:
        store_segment(seg_h, seg_g, i_nh, i_s, i_d, NS, b_dh, b_gs, D, M, o_h, o_m, m_dm, m_m)
    if STORE_DH0:
        if i_s == 0 and t_hi == NTn:  # the sequence's only segment: nothing to carry in
            tl.store(dh0 + i_nh.to(tl.int64) * D * M + o_s, b_dh, mask=m_dm)


@triton.jit
def chunk_gsa_bwd_kernel_dh_carry(gl, dh, dh0, seg_h, seg_g, cu_seqlens, chunk_offsets, stride_sd, stride_sm,
                                  H, D, M, SEG, NS, BT: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr,
                                  NM: tl.constexpr, STORE_DH0: tl.constexpr):
    """Program (D tile x slot tile, sequence x head, segment i_s that has a later one): the gradient entering the
    segment from its end, c = what segments after it give (c <- c * exp(G_k) + E_k, last segment first), added to
    each stored chunk-end gradient of the segment decayed by the chunks after it there:
    dh[c] += exp(sum of Gl_last after c) * c. The first segment's program also writes the initial state's gradient."""
    i_nh, i_s = tl.program_id(1), tl.program_id(2)
    i_h, bos, eos, i_c0, NTn, t_lo, t_hi = segment_range(cu_seqlens, chunk_offsets, i_nh, i_s, H, SEG, BT)
    if t_hi >= NTn:  # the last segment (or past it): its walk started from the true cotangent
        return
    i_d, o_d, o_m, m_d, m_m, m_dm, o_h = state_tile_offsets(D, M, BD, BM, NM)
    n_seg = tl.cdiv(NTn, SEG)  # segments n_seg - 1 down to i_s + 1
    b_c = carry_in(seg_h, seg_g, i_nh, NS, n_seg - 1, n_seg - 1 - i_s, -1, D, M, o_h, o_m, m_dm, m_m, BD, BM)
    b_gp = add_carry(dh, gl, b_c, bos, eos, i_c0, i_h, t_lo, t_hi, H, D, M, o_h, o_m, m_dm, m_m, BT, BM, True)
    if STORE_DH0:
        if i_s == 0:
            i_seg = i_nh.to(tl.int64) * NS
            b_e = tl.load(seg_h + i_seg * D * M + o_h, mask=m_dm, other=0) + tl.exp(b_gp)[None, :] * b_c
            o_s = o_d[:, None] * stride_sd + o_m[None, :] * stride_sm
            tl.store(dh0 + i_nh.to(tl.int64) * D * M + o_s, b_e, mask=m_dm)


def chunk_bwd_dh(y: torch.Tensor, A: torch.Tensor, L: torch.Tensor | None, gl: torch.Tensor, dht: torch.Tensor | None,
                 chunks: Chunks, nt_alloc: int, scale: float, want_dh0: bool, transposed: bool, prec: str,
                 side: Side | None = None, dtype: torch.dtype = torch.float32):
    """Gradients of the chunk-end states of one pass, and of its initial state.

    y: [TT, HQ, D] (q, or dO), A: [TT, HQ, M] float32 (dA1; or A1, with L [TT, HQ, 2] its rows' statistics when
    the weights are softmax(A1) (chunk_a.chunk_fwd_a), else None),
    gl: [TT, H, M], dht: final-state cotangent in the caller's layout or None. side: launch on this second stream
    (streams.py; the caller joins it before reading the gradients).
    dtype: dh's storage (launch.state_grad_dtype); the walk accumulates in float32 either way.
    Returns dh [nt_alloc, H, D, M] and dh0 in the caller's layout, float32 (or None).
    """
    TT, HQ, D = y.shape
    H, M = gl.shape[1], gl.shape[2]
    dh = y.new_empty(nt_alloc, H, D, M, dtype=dtype)
    shape = (chunks.N, H, M, D) if transposed else (chunks.N, H, D, M)
    dh0 = y.new_empty(shape, dtype=torch.float32) if want_dh0 else None
    sd, sm = state_strides(D, M, transposed)
    # as chunk_fwd_h: segments walked in parallel, then the carry from later segments
    w = walk_plan(y, "dh", D, H, M, chunks, SETTINGS.segment_dh)
    meta = dict(H=H, D=D, M=M, SEG=w.SEG, NS=w.NS, BT=BT, BD=w.BD)
    carry = w.carry("dh-carry", D, M) if w.NS > 1 else None
    with launching(side, w.seg_h, w.seg_g):
        launch(chunk_gsa_bwd_kernel_dh, w.grid)(
            y, A, L, gl, dh, dht, dh0, w.seg_h, w.seg_g, chunks.cu_seqlens, chunks.offsets, scale, sd, sm, HQ=HQ,
            **meta, SOFTMAX=L is not None, USE_DHT=dht is not None, STORE_DH0=want_dh0,
            SEGMENTED=w.NS > 1, PREC=prec, DOTS=state_dots_mode(y.dtype), **w.split, **w.opts,
        )
        if carry is not None:
            launch(chunk_gsa_bwd_kernel_dh_carry, carry[1])(
                gl, dh, dh0, w.seg_h, w.seg_g, chunks.cu_seqlens, chunks.offsets, sd, sm, **meta,
                STORE_DH0=want_dh0, **carry[0],
            )
    return dh, dh0
