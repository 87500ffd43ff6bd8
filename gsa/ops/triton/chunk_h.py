"""Chunk-boundary states of GSA's two passes (forward).

Both passes keep a state of the form S [D, M] (pass 1: Hk [K, M]; pass 2: Hv stored transposed, [V, M]), so one
kernel serves both: per chunk, S <- S * exp(Gl_last)[None, :] + x^T @ (s * exp(Gl_last - Gl)). All exponents
are <= 0, so nothing overflows however strong the gates are.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from gsa.ops.triton.chunks import BT, Chunks, sequence_bounds
from gsa.ops.triton.launch import (
    block, cdiv, check_flag, chunk_state_dtype, launch, settings_memo, slot_options, sm_count, state_dots_mode,
    state_tile,
)
from gsa.ops.triton.settings import SETTINGS
from gsa.ops.triton.streams import Side, launching
from gsa.ops.triton.tiles import load_row, load_rows, state_product


@triton.jit
def segment_range(cu_seqlens, chunk_offsets, i_nh, i_s, H, SEG, BT: tl.constexpr):
    """What program (sequence x head i_nh, segment i_s) of a state walk covers: (i_h, bos, eos, i_c0, NTn, t_lo,
    t_hi), the head, the sequence's tokens, its first chunk's index, its chunk count and the segment's chunks
    [t_lo, t_hi) (empty, t_lo >= NTn, for a segment past the sequence's end)."""
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = sequence_bounds(cu_seqlens, i_n)
    i_c0 = tl.load(chunk_offsets + i_n).to(tl.int64)
    NTn = tl.cdiv(eos - bos, BT)
    t_lo = i_s * SEG
    return i_h, bos, eos, i_c0, NTn, t_lo, tl.minimum(t_lo + SEG, NTn)


@triton.jit
def state_tile_offsets(D, M, BD: tl.constexpr, BM: tl.constexpr, NM: tl.constexpr):
    """(i_d, o_d, o_m, m_d, m_m, m_dm, o_h) of the state tile of this program (grid axis 0: D tiles x slot tiles,
    slot tile fastest): its D tile index, rows and slots, their masks, and the offsets of that [BD, BM] tile in an
    internal [D, M] state. Slot columns never mix in these recurrences (the decays are diagonal over slots;
    docs/algorithm.md), so a slot tile is walked alone."""
    if NM == 1:  # one tile of every slot: plain offsets (splitting program_id(0) alone raised sm_90 spills at 1.3b)
        i_d = tl.program_id(0)
        o_m = tl.arange(0, BM)
    else:
        i_d = tl.program_id(0) // NM
        o_m = (tl.program_id(0) % NM) * BM + tl.arange(0, BM)
    o_d = i_d * BD + tl.arange(0, BD)
    m_d, m_m = o_d < D, o_m < M
    return i_d, o_d, o_m, m_d, m_m, m_d[:, None] & m_m[None, :], o_d[:, None] * M + o_m[None, :]


@triton.jit
def store_segment(seg_h, seg_g, i_nh, i_s, i_d, NS, b_h, b_gs, D, M, o_h, o_m, m_dm, m_m):
    """A segment's walked-out state tile (from zero) and, once per segment, its total log decay."""
    i_seg = i_nh.to(tl.int64) * NS + i_s
    tl.store(seg_h + i_seg * D * M + o_h, b_h, mask=m_dm)
    if i_d == 0:
        tl.store(seg_g + i_seg * M + o_m, b_gs, mask=m_m)


@triton.jit
def carry_in(seg_h, seg_g, i_nh, NS, j0, n, step, D, M, o_h, o_m, m_dm, m_m, BD: tl.constexpr, BM: tl.constexpr):
    """What n segments j0, j0 + step, ... leave at the far end of the last of them: c <- c * exp(G_j) + E_j over
    their walked-out states E_j and log decays G_j. [BD, BM] float32."""
    b_c = tl.zeros([BD, BM], dtype=tl.float32)
    for k in range(n):
        i_seg = i_nh.to(tl.int64) * NS + j0 + k * step
        b_g = tl.load(seg_g + i_seg * M + o_m, mask=m_m, other=0)
        b_c = b_c * tl.exp(b_g)[None, :] + tl.load(seg_h + i_seg * D * M + o_h, mask=m_dm, other=0)
    return b_c


@triton.jit
def add_carry(h, gl, b_c, bos, eos, i_c0, i_h, t_lo, t_hi, H, D, M, o_h, o_m, m_dm, m_m, BT: tl.constexpr,
              BM: tl.constexpr, REVERSE: tl.constexpr):
    """Adds the carry b_c to the stored states of chunks [t_lo, t_hi), each decayed by the chunks between it and
    the segment's start (REVERSE: its end); returns that decay over the whole segment [BM]."""
    b_gp = tl.zeros([BM], dtype=tl.float32)
    for i in range(t_hi - t_lo):
        if REVERSE:
            i_t = t_hi - 1 - i
        else:
            i_t = t_lo + i
        p_h = h + ((i_c0 + i_t) * H + i_h) * D * M + o_h
        b_h = tl.load(p_h, mask=m_dm, other=0).to(tl.float32) + tl.exp(b_gp)[None, :] * b_c
        tl.store(p_h, b_h.to(h.dtype.element_ty), mask=m_dm)
        last = tl.minimum(bos + i_t * BT + BT, eos) - 1
        b_gp += load_row(gl + i_h * M, last, H * M, o_m, m_m)
    return b_gp


@triton.jit
def kernel_h_step(x, s, gl, h, b_h, b_gs, i_t, i_c0, i_h, bos, eos, H, D, M, o_d, o_m, m_d, m_m, m_dm, o_h,
                  BT: tl.constexpr, PREC: tl.constexpr, DOTS: tl.constexpr, MASK_T: tl.constexpr,
                  EVEN: tl.constexpr):
    """One chunk of the walk: store its chunk-start state, then S <- S * exp(Gl_last) + x^T (s * exp(Gl_last - Gl)).
    MASK_T: the chunk may end past its sequence (the last one); else the time mask is a constant the compiler drops,
    as are m_d / m_m where the caller passes constants (EVEN). Per-element masks are kept as bit fields unpacked at
    every use: without them the 1.3b walk's chunk step compiles to fewer instructions for sm_90 (docs/log.md)."""
    p_h = h + ((i_c0 + i_t) * H + i_h) * D * M + o_h
    if EVEN:
        tl.store(p_h, b_h.to(h.dtype.element_ty))
    else:
        tl.store(p_h, b_h.to(h.dtype.element_ty), mask=m_dm)
    o_t = bos + i_t * BT + tl.arange(0, BT)
    if MASK_T:
        m_t = o_t < eos
    else:
        m_t = tl.full([BT], 1, tl.int1)
    last = tl.minimum(bos + i_t * BT + BT, eos) - 1
    b_x = load_rows(x + i_h * D, o_t, m_t, H * D, o_d, m_d)  # [BT, BD]
    b_s = load_rows(s + i_h * M, o_t, m_t, H * M, o_m, m_m).to(tl.float32)  # [BT, BM]
    b_g = load_rows(gl + i_h * M, o_t, m_t, H * M, o_m, m_m)  # [BT, BM]
    b_gl = load_row(gl + i_h * M, last, H * M, o_m, m_m)  # [BM]
    b_sd = tl.where(m_t[:, None], b_s * tl.exp(b_gl[None, :] - b_g), 0.0)
    b_h = b_h * tl.exp(b_gl)[None, :] + state_product(b_x, b_sd, None, DOTS, PREC)
    return b_h, b_gs + b_gl


@triton.jit
def chunk_gsa_fwd_kernel_h(x, s, gl, h, h0, ht, seg_h, seg_g, cu_seqlens, chunk_offsets, stride_sd, stride_sm,
                           H, D, M, SEG, NS, BT: tl.constexpr,
                           BD: tl.constexpr, BM: tl.constexpr, NM: tl.constexpr, USE_H0: tl.constexpr,
                           STORE_HT: tl.constexpr, SEGMENTED: tl.constexpr, PREC: tl.constexpr,
                           DOTS: tl.constexpr, SPLIT: tl.constexpr, EVEN: tl.constexpr):
    """Program (D tile x slot tile, sequence x head, segment): the chunk-start states of chunks
    [i_s * SEG, (i_s + 1) * SEG) of its sequence, from the initial state (segment 0) or from zero (later segments: the
    carry kernel adds what the earlier segments leave). SEGMENTED: also store the segment's end state and total log
    decay. DOTS: the product's operands (launch.state_dots_mode). SPLIT (launch option, on for "h"): the chunks that
    end inside the sequence take the step without a mask over time, and over D and slots too where EVEN (D and M
    whole numbers of tiles); a partial last chunk, after them, the masked one. Else every chunk the masked step."""
    i_nh, i_s = tl.program_id(1), tl.program_id(2)
    i_h, bos, eos, i_c0, NTn, t_lo, t_hi = segment_range(cu_seqlens, chunk_offsets, i_nh, i_s, H, SEG, BT)
    if t_lo >= NTn:
        return
    i_d, o_d, o_m, m_d, m_m, m_dm, o_h = state_tile_offsets(D, M, BD, BM, NM)
    o_s = o_d[:, None] * stride_sd + o_m[None, :] * stride_sm  # the tile in a caller state (either layout)

    b_h = tl.zeros([BD, BM], dtype=tl.float32)  # [BD, BM]
    if USE_H0:
        if i_s == 0:
            b_h += tl.load(h0 + i_nh.to(tl.int64) * D * M + o_s, mask=m_dm, other=0)
    b_gs = tl.zeros([BM], dtype=tl.float32)  # the segment's log decay so far
    if SPLIT:
        t_full = tl.minimum(t_hi, (eos - bos) // BT)  # the segment's chunks before t_full end inside the sequence
        if EVEN:  # constant masks: the compiler drops them
            m_d1 = tl.full([BD], 1, tl.int1)
            m_m1 = tl.full([BM], 1, tl.int1)
        else:
            m_d1 = m_d
            m_m1 = m_m
        for i_t in range(t_lo, t_full):
            b_h, b_gs = kernel_h_step(x, s, gl, h, b_h, b_gs, i_t, i_c0, i_h, bos, eos, H, D, M, o_d, o_m, m_d1,
                                      m_m1, m_dm, o_h, BT, PREC, DOTS, False, EVEN)
        if t_full < t_hi:  # the sequence's partial last chunk
            b_h, b_gs = kernel_h_step(x, s, gl, h, b_h, b_gs, t_full, i_c0, i_h, bos, eos, H, D, M, o_d, o_m, m_d,
                                      m_m, m_dm, o_h, BT, PREC, DOTS, True, EVEN)
    else:  # every chunk masked
        for i_t in range(t_lo, t_hi):
            b_h, b_gs = kernel_h_step(x, s, gl, h, b_h, b_gs, i_t, i_c0, i_h, bos, eos, H, D, M, o_d, o_m, m_d, m_m,
                                      m_dm, o_h, BT, PREC, DOTS, True, False)
    if SEGMENTED:
        store_segment(seg_h, seg_g, i_nh, i_s, i_d, NS, b_h, b_gs, D, M, o_h, o_m, m_dm, m_m)
    if STORE_HT:
        if i_s == 0 and t_hi == NTn:  # the sequence's only segment: nothing to carry in
            tl.store(ht + i_nh.to(tl.int64) * D * M + o_s, b_h, mask=m_dm)


@triton.jit
def chunk_gsa_fwd_kernel_h_carry(gl, h, ht, seg_h, seg_g, cu_seqlens, chunk_offsets, stride_sd, stride_sm,
                                 H, D, M, SEG, NS, BT: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr,
                                 NM: tl.constexpr, STORE_HT: tl.constexpr):
    """Program (D tile x slot tile, sequence x head, segment i_s >= 1): the state entering segment i_s, c = what
    segments 0 .. i_s - 1 leave (c <- c * exp(G_j) + E_j over their end states E_j and log decays G_j), added to each
    chunk-start state of the segment decayed by the chunks before it there: h[c] += exp(sum of Gl_last before c) * c."""
    i_nh, i_s = tl.program_id(1), tl.program_id(2) + 1
    i_h, bos, eos, i_c0, NTn, t_lo, t_hi = segment_range(cu_seqlens, chunk_offsets, i_nh, i_s, H, SEG, BT)
    if t_lo >= NTn:
        return
    i_d, o_d, o_m, m_d, m_m, m_dm, o_h = state_tile_offsets(D, M, BD, BM, NM)
    b_c = carry_in(seg_h, seg_g, i_nh, NS, 0, i_s, 1, D, M, o_h, o_m, m_dm, m_m, BD, BM)  # segments 0 .. i_s - 1
    b_gp = add_carry(h, gl, b_c, bos, eos, i_c0, i_h, t_lo, t_hi, H, D, M, o_h, o_m, m_dm, m_m, BT, BM, False)
    if STORE_HT:
        if t_hi == NTn:  # the sequence's last segment: its end state is the final state
            i_seg = i_nh.to(tl.int64) * NS + i_s
            b_e = tl.load(seg_h + i_seg * D * M + o_h, mask=m_dm, other=0) + tl.exp(b_gp)[None, :] * b_c
            o_s = o_d[:, None] * stride_sd + o_m[None, :] * stride_sm
            tl.store(ht + i_nh.to(tl.int64) * D * M + o_s, b_e, mask=m_dm)


# Segments of the state recurrence. At B = 1 and long T the forward state kernel is a few programs walking
# hundreds of chunks one after another (~1.8 us a chunk on the H100, latency-bound): kernel_h took 1.94 ms of a
# 5.6 ms fwd+bwd at B 1 T 16K (docs/log.md, "Kernels"). Split into NS segments, each walked from zero by its own
# programs, the walk is NS times shorter; a second, parallel pass adds to every chunk-start state what the earlier
# segments leave (c <- c * exp(G_j) + E_j, then decayed inside the segment), reading and writing the states once more.


def state_segments(D: int, H: int, slot_tiles: int, N: int, max_nt: int, device: torch.device) -> int:
    """How many segments each sequence's state walk is split into (1: not split): 1 while the programs at
    state_tile_max's D tiles fill the GPU (and on a CPU); else enough for two programs an SM at the segmented walk's
    D tiles (SETTINGS.segment_tile_max; each D tile walked as `slot_tiles` programs), with at least 8 chunks a
    segment. N sequences of at most max_nt chunks."""
    if SETTINGS.state_segments is not None:
        return max(1, min(SETTINGS.state_segments, max_nt))
    def programs(tile_max: int) -> int:  # of one walk at D tiles of at most tile_max
        return cdiv(D, block(D, tile_max)) * slot_tiles * N * H

    sms = sm_count(device)
    if programs(SETTINGS.state_tile_max) >= sms:
        return 1
    ns = min(cdiv(2 * sms, programs(SETTINGS.segment_tile_max)), max_nt // 8)
    return ns if ns >= 2 else 1


# Slot tiles. Every state column m has its own recurrence (the decays are diagonal over slots; docs/algorithm.md),
# so the state kernels split M into BM-wide tiles along grid axis 0 beside the D tiles. One [BD, 128] tile at
# M = 128 spilled on sm_90 (`benchmarks/kernel_resources.py --shape m128`: kernel_dh 2.0-2.4 KB a thread, kernel_h
# 0.4-0.5 KB; docs/log.md, "Kernels"), and both kernels took 2.3-3.4x their M = 64 time (h100/grid.json,
# `profile`). At [64, 64] tiles kernel_dh spilled 1.2-1.3 KB (softmax pass, when it re-read A1 for the row
# statistics) and 0.3-0.5 KB (the other); kernel_h's 0.5-0.8 KB stays (it spills as much at the 1.3b shape's
# [64, 64] tiles).
# launch.slot_options takes 64-wide tiles unless SETTINGS.launch sets "BM": the default for kernel_h and kernel_dh
# at M = 128, timed on the H100 (settings.py); the carry and narrow-tile kernels' "@m128" entries keep one tile.


class Walk(NamedTuple):
    """A state walk's launch: D tile BD, NS segments of SEG chunks, the float32 buffers of each segment's end state
    [N * H, NS, D, M] and log decay [N * H, NS, M] (None unsplit), the main kernel's launch options (with BM) and
    grid (D tiles x slot tiles, sequences x heads, segments), and its SPLIT and EVEN constexprs (launch option
    "SPLIT", a bool, False where the entry leaves it out: the whole chunks without masks; EVEN: with it, D and M
    whole tiles)."""

    BD: int
    SEG: int
    NS: int
    seg_h: torch.Tensor | None
    seg_g: torch.Tensor | None
    opts: Mapping
    grid: tuple[int, int, int]
    split: Mapping

    def carry(self, name: str, D: int, M: int) -> tuple[dict, tuple[int, int, int]]:
        """Launch options and grid of the carry kernel `name` (its own slot tile; segments 1 .. NS - 1 or
        0 .. NS - 2)."""
        opts = slot_options(name, M)
        return opts, (cdiv(D, self.BD) * opts["NM"], self.grid[1], self.NS - 1)


def walk_plan(x: torch.Tensor, name: str, D: int, H: int, M: int, chunks: Chunks, segmented: bool) -> Walk:
    """The launch of state kernel `name` ("h" or "dh"; f"{name}-narrow" at 16-wide D tiles unsplit). Split into
    segments (`segmented` and state_segments, NS as rounded to whole segments): D tiles of
    SETTINGS.segment_tile_max; unsplit: the D tile narrowed while the programs, slot tiles of `name`'s options
    counted, would not fill the SMs (launch.state_tile)."""
    BD, SEG, NS, opts, grid, split = _walk_layout(name, D, H, M, chunks.N, chunks.max_nt, segmented, x.device,
                                                  sm_count(x.device))
    seg_h = seg_g = None
    if NS > 1:
        seg_h = x.new_empty(chunks.N * H, NS, D, M, dtype=torch.float32)
        seg_g = x.new_empty(chunks.N * H, NS, M, dtype=torch.float32)
    return Walk(BD, SEG, NS, seg_h, seg_g, opts, grid, split)


@settings_memo
def _walk_layout(name: str, D: int, H: int, M: int, N: int, max_nt: int, segmented: bool, device: torch.device,
                 sms: int):
    """walk_plan's tiles, segments, launch options (read-only) and grid, for N sequences of at most max_nt chunks
    on `device` (its SM count `sms` in the memo's key: tests stand in another GPU's count)."""
    n_m = slot_options(name, M)["NM"]
    NS = state_segments(D, H, n_m, N, max_nt, device) if segmented else 1
    if NS <= 1:
        BD, SEG, NS = state_tile(D, N * H, device, n_m), max(max_nt, 1), 1
    else:
        SEG = cdiv(max_nt, NS)
        NS = cdiv(max_nt, SEG)
        BD = block(D, SETTINGS.segment_tile_max)
    entry = name if BD > 16 or NS > 1 else f"{name}-narrow"
    opts = slot_options(entry, M)
    split = opts.pop("SPLIT", False)
    check_flag(entry, "SPLIT", split, "whole chunks without masks")
    split = dict(SPLIT=split, EVEN=split and D % BD == 0 and M % opts["BM"] == 0)
    return (BD, SEG, NS, types.MappingProxyType(opts), (cdiv(D, BD) * opts["NM"], N * H, NS),
            types.MappingProxyType(split))


def state_strides(D: int, M: int, transposed: bool) -> tuple[int, int]:
    # caller states are hk [.., K, M] and hv [.., M, V]; internal states are [.., D, M] for both passes
    return (1, D) if transposed else (M, 1)


def chunk_fwd_h(x: torch.Tensor, s: torch.Tensor, gl: torch.Tensor, h0: torch.Tensor | None, chunks: Chunks,
                nt_alloc: int, output_final_state: bool, transposed: bool, prec: str, for_backward: bool,
                side: Side | None = None, final_states: bool | None = None):
    """Chunk-start states of one pass.

    x: [TT, H, D] (k, or v), s/gl: [TT, H, M], h0: [N, H, D, M] (or [N, H, M, D] when `transposed`).
    for_backward: the backward reads the states (launch.chunk_state_dtype, with `final_states`: whether final-state
    cotangents reach that backward; None: output_final_state). side: launch on this second stream (streams.py; the
    caller joins it before reading the states).
    Returns states [nt_alloc, H, D, M] (the first chunks.NT rows written; float32, or x's dtype as
    SETTINGS.chunk_states says) and the final state in h0's layout, float32 (or None).
    """
    TT, H, D = x.shape
    M = s.shape[-1]
    final = output_final_state if final_states is None else final_states
    h = x.new_empty(nt_alloc, H, D, M, dtype=chunk_state_dtype(x.dtype, for_backward, final))
    shape = (chunks.N, H, M, D) if transposed else (chunks.N, H, D, M)
    ht = x.new_empty(shape, dtype=torch.float32) if output_final_state else None
    sd, sm = state_strides(D, M, transposed)
    # few long sequences: split each into NS segments walked in parallel, then carry across them
    w = walk_plan(x, "h", D, H, M, chunks, True)
    meta = dict(H=H, D=D, M=M, SEG=w.SEG, NS=w.NS, BT=BT, BD=w.BD)
    carry = w.carry("h-carry", D, M) if w.NS > 1 else None
    with launching(side, w.seg_h, w.seg_g):
        launch(chunk_gsa_fwd_kernel_h, w.grid)(
            x, s, gl, h, h0, ht, w.seg_h, w.seg_g, chunks.cu_seqlens, chunks.offsets, sd, sm, **meta,
            USE_H0=h0 is not None, STORE_HT=output_final_state, SEGMENTED=w.NS > 1, PREC=prec,
            DOTS=state_dots_mode(x.dtype), **w.split, **w.opts,
        )
        if carry is not None:
            launch(chunk_gsa_fwd_kernel_h_carry, carry[1])(
                gl, h, ht, w.seg_h, w.seg_g, chunks.cu_seqlens, chunks.offsets, sd, sm, **meta,
                STORE_HT=output_final_state, **carry[0],
            )
    return h, ht
