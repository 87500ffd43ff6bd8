"""Gradients of the chunk-boundary states (backward), for either pass.

Per chunk, in reverse: dS <- dS * exp(Gl_last)[None, :] + scale * sum_{query heads} y^T @ (a * exp(Gl)), with
(y, a) = (q, dA1) for Hk and (dO, softmax(A1)) for Hv^T. The stored dS of a chunk is the gradient of the state
at its END; what is left after the first chunk is the initial state's gradient.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gsa.ops.triton.chunk_h import state_strides
from gsa.ops.triton.utils import (
    launch,
    BT, Chunks, block, launch_options, load_row, load_rows, masked_softmax, sequence_bounds, state_tile,
)


@triton.jit
def chunk_gsa_bwd_kernel_dh(y, A, gl, dh, dht, dh0, cu_seqlens, chunk_offsets, scale, stride_sd, stride_sm,
                            H, HQ, D, M,
                            BT: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr, SOFTMAX: tl.constexpr,
                            USE_DHT: tl.constexpr, STORE_DH0: tl.constexpr, PREC: tl.constexpr):
    G = HQ // H
    i_d, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = sequence_bounds(cu_seqlens, i_n)
    i_c0 = tl.load(chunk_offsets + i_n).to(tl.int64)
    NTn = tl.cdiv(eos - bos, BT)

    o_d = i_d * BD + tl.arange(0, BD)
    o_m = tl.arange(0, BM)
    m_d, m_m = o_d < D, o_m < M
    m_dm = m_d[:, None] & m_m[None, :]
    o_s = o_d[:, None] * stride_sd + o_m[None, :] * stride_sm
    o_h = o_d[:, None] * M + o_m[None, :]

    b_dh = tl.zeros([BD, BM], dtype=tl.float32)  # [BD, BM]
    if USE_DHT:
        b_dh += tl.load(dht + i_nh.to(tl.int64) * D * M + o_s, mask=m_dm, other=0)
    for i in range(NTn):
        i_t = NTn - 1 - i
        # the gradient of the state at the END of chunk i_t
        tl.store(dh + ((i_c0 + i_t) * H + i_h) * D * M + o_h, b_dh, mask=m_dm)
        o_t = bos + i_t * BT + tl.arange(0, BT)
        m_t = o_t < eos
        last = tl.minimum(bos + i_t * BT + BT, eos) - 1
        m_tm = m_t[:, None] & m_m[None, :]
        b_g = load_rows(gl + i_h * M, o_t, m_t, H * M, o_m, m_m)  # [BT, BM]
        b_gl = load_row(gl + i_h * M, last, H * M, o_m, m_m)  # [BM]
        b_e = tl.where(m_tm, tl.exp(b_g), 0.0)
        b_acc = tl.zeros([BD, BM], dtype=tl.float32)
        for i_g in range(G):
            i_hq = i_h * G + i_g
            b_a = load_rows(A + i_hq * M, o_t, m_t, HQ * M, o_m, m_m)  # [BT, BM]
            if SOFTMAX:
                b_a = masked_softmax(b_a, m_tm)
            b_y = load_rows(y + i_hq * D, o_t, m_t, HQ * D, o_d, m_d).to(tl.float32)  # [BT, BD]
            b_acc += tl.dot(tl.trans(b_y), b_a * b_e, input_precision=PREC)
        b_dh = b_dh * tl.exp(b_gl)[None, :] + scale * b_acc
    if STORE_DH0:
        tl.store(dh0 + i_nh.to(tl.int64) * D * M + o_s, b_dh, mask=m_dm)


def chunk_bwd_dh(y: torch.Tensor, A: torch.Tensor, gl: torch.Tensor, dht: torch.Tensor | None, chunks: Chunks,
                 nt_alloc: int, scale: float, softmax: bool, want_dh0: bool, transposed: bool, prec: str):
    """Gradients of the chunk-end states of one pass, and of its initial state.

    y: [TT, HQ, D] (q, or dO), A: [TT, HQ, M] float32 (dA1, or A1 when `softmax`: the weights are softmax(A1)),
    gl: [TT, H, M], dht: final-state cotangent in the caller's layout or None.
    Returns dh [nt_alloc, H, D, M] float32 and dh0 in the caller's layout (or None).
    """
    TT, HQ, D = y.shape
    H, M = gl.shape[1], gl.shape[2]
    BD, BM = state_tile(D, chunks.N * H, y.device), block(M, 128)
    dh = y.new_empty(nt_alloc, H, D, M, dtype=torch.float32)
    shape = (chunks.N, H, M, D) if transposed else (chunks.N, H, D, M)
    dh0 = y.new_empty(shape, dtype=torch.float32) if want_dh0 else None
    sd, sm = state_strides(D, M, transposed)
    grid = (triton.cdiv(D, BD), chunks.N * H)
    launch(chunk_gsa_bwd_kernel_dh, grid)(
        y, A, gl, dh, dht, dh0, chunks.cu_seqlens, chunks.offsets, scale, sd, sm,
        H=H, HQ=HQ, D=D, M=M, BT=BT, BD=BD, BM=BM, SOFTMAX=softmax, USE_DHT=dht is not None,
        STORE_DH0=want_dh0, PREC=prec, **launch_options("dh" if BD > 16 else "dh-narrow"),
    )
    return dh, dh0
