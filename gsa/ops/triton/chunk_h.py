"""Chunk-boundary states of GSA's two passes (forward).

Both passes keep a state of the form S [D, M] (pass 1: Hk [K, M]; pass 2: Hv stored transposed, [V, M]), so one
kernel serves both: per chunk, S <- S * exp(Gl_last)[None, :] + x^T @ (s * exp(Gl_last - Gl)). All exponents
are <= 0, so nothing overflows however strong the gates are.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gsa.ops.triton.utils import (
    launch,
    BT, Chunks, block, chunk_state_dtype, launch_options, load_row, load_rows, sequence_bounds, state_tile,
)


@triton.jit
def chunk_gsa_fwd_kernel_h(x, s, gl, h, h0, ht, cu_seqlens, chunk_offsets, stride_sd, stride_sm,
                           H, D, M, BT: tl.constexpr,
                           BD: tl.constexpr, BM: tl.constexpr, USE_H0: tl.constexpr, STORE_HT: tl.constexpr,
                           PREC: tl.constexpr):
    i_d, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = sequence_bounds(cu_seqlens, i_n)
    i_c0 = tl.load(chunk_offsets + i_n).to(tl.int64)
    NTn = tl.cdiv(eos - bos, BT)

    o_d = i_d * BD + tl.arange(0, BD)
    o_m = tl.arange(0, BM)
    m_d, m_m = o_d < D, o_m < M
    m_dm = m_d[:, None] & m_m[None, :]
    # offsets of a [BD, BM] tile of a caller state (either layout) and of an internal [D, M] state
    o_s = o_d[:, None] * stride_sd + o_m[None, :] * stride_sm
    o_h = o_d[:, None] * M + o_m[None, :]

    b_h = tl.zeros([BD, BM], dtype=tl.float32)  # [BD, BM]
    if USE_H0:
        b_h += tl.load(h0 + i_nh.to(tl.int64) * D * M + o_s, mask=m_dm, other=0)
    for i_t in range(NTn):
        tl.store(h + ((i_c0 + i_t) * H + i_h) * D * M + o_h, b_h.to(h.dtype.element_ty), mask=m_dm)
        o_t = bos + i_t * BT + tl.arange(0, BT)
        m_t = o_t < eos
        last = tl.minimum(bos + i_t * BT + BT, eos) - 1
        b_x = load_rows(x + i_h * D, o_t, m_t, H * D, o_d, m_d).to(tl.float32)  # [BT, BD]
        b_s = load_rows(s + i_h * M, o_t, m_t, H * M, o_m, m_m).to(tl.float32)  # [BT, BM]
        b_g = load_rows(gl + i_h * M, o_t, m_t, H * M, o_m, m_m)  # [BT, BM]
        b_gl = load_row(gl + i_h * M, last, H * M, o_m, m_m)  # [BM]
        b_sd = tl.where(m_t[:, None], b_s * tl.exp(b_gl[None, :] - b_g), 0.0)
        b_h = b_h * tl.exp(b_gl)[None, :] + tl.dot(tl.trans(b_x), b_sd, input_precision=PREC)
    if STORE_HT:
        tl.store(ht + i_nh.to(tl.int64) * D * M + o_s, b_h, mask=m_dm)


def state_strides(D: int, M: int, transposed: bool) -> tuple[int, int]:
    # caller states are hk [.., K, M] and hv [.., M, V]; internal states are [.., D, M] for both passes
    return (1, D) if transposed else (M, 1)


def chunk_fwd_h(x: torch.Tensor, s: torch.Tensor, gl: torch.Tensor, h0: torch.Tensor | None, chunks: Chunks,
                nt_alloc: int, output_final_state: bool, transposed: bool, prec: str):
    """Chunk-start states of one pass.

    x: [TT, H, D] (k, or v), s/gl: [TT, H, M], h0: [N, H, D, M] (or [N, H, M, D] when `transposed`).
    Returns states [nt_alloc, H, D, M] (the first chunks.NT rows written; float32, or x's dtype under
    CHUNK_STATES = "input") and the final state in h0's layout, float32 (or None).
    """
    TT, H, D = x.shape
    M = s.shape[-1]
    BD, BM = state_tile(D, chunks.N * H, x.device), block(M, 128)
    h = x.new_empty(nt_alloc, H, D, M, dtype=chunk_state_dtype(x.dtype))
    shape = (chunks.N, H, M, D) if transposed else (chunks.N, H, D, M)
    ht = x.new_empty(shape, dtype=torch.float32) if output_final_state else None
    sd, sm = state_strides(D, M, transposed)
    grid = (triton.cdiv(D, BD), chunks.N * H)
    launch(chunk_gsa_fwd_kernel_h, grid)(
        x, s, gl, h, h0, ht, chunks.cu_seqlens, chunks.offsets, sd, sm,
        H=H, D=D, M=M, BT=BT, BD=BD, BM=BM, USE_H0=h0 is not None, STORE_HT=output_final_state, PREC=prec,
        **launch_options("h" if BD > 16 else "h-narrow"),
    )
    return h, ht
