"""Fused recurrent GSA for decoding (T == 1) and short inputs: the recurrence of docs/algorithm.md, "Recurrence",
step by step.

The key state Hk does not depend on the softmax, so two kernels run the two passes, each over all steps:
  1. per (sequence, kv head, K tile): Hk <- Hk * alpha + k s^T, and each query head's partial scores q @ Hk
     over the tile;
  2. per (sequence, kv head, V tile): the scores summed over K tiles, softmax per query head,
     Hv <- Hv * alpha + s v^T, o = p @ Hv.
States stay float32 in registers between steps. With `inplace`, the caller's state buffers are read and then
overwritten (nothing else is); otherwise inputs are never written. No host synchronisation, so a decode step
can be captured in a CUDA graph.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gsa.ops.triton.chunks import sequence_bounds
from gsa.ops.triton.launch import block, check_slots, pdl_launch, state_tile, cdiv, next_pow2
from gsa.ops.triton.tiles import gate_from_logits, masked_softmax


@triton.jit
def _load_gate(s, g, t, i_h, stride_g, gate_norm, o_m, m_m, M: tl.constexpr, GATE: tl.constexpr):
    """(s_t, g_t) [BM] float32 of kv head i_h: loaded, or with GATE computed from the slot logits in g."""
    if GATE:
        b_f = tl.load(g + t * stride_g + i_h * M + o_m, mask=m_m, other=0).to(tl.float32)
        b_g, b_s = gate_from_logits(b_f, gate_norm)
    else:
        b_s = tl.load(s + t * stride_g + i_h * M + o_m, mask=m_m, other=0).to(tl.float32)
        b_g = tl.load(g + t * stride_g + i_h * M + o_m, mask=m_m, other=0).to(tl.float32)
    return b_s, b_g


@triton.jit
def _load_feature(x, mask, SWISH: tl.constexpr):
    b_x = tl.load(x, mask=mask, other=0).to(tl.float32)
    if SWISH:
        b_x = b_x * tl.sigmoid(b_x)
    return b_x


@triton.jit
def fused_recurrent_gsa_fwd_kernel_k(q, k, s, g, h0, ht, part, cu_seqlens, scale, T, stride_q, stride_k, stride_g,
                                     gate_norm,
                                     H: tl.constexpr, HQ: tl.constexpr, K: tl.constexpr, M: tl.constexpr,
                                     BK: tl.constexpr, BM: tl.constexpr, NK: tl.constexpr,
                                     USE_H0: tl.constexpr, STORE_HT: tl.constexpr, IS_VARLEN: tl.constexpr,
                                     SWISH: tl.constexpr, GATE: tl.constexpr, PDL: tl.constexpr):
    G: tl.constexpr = HQ // H
    if PDL:
        # With programmatic dependent launch: read nothing before the kernel before this one is done (it may have
        # written any input, the states included), then let kernel_v start (it waits for this one in turn).
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    i_k, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    if IS_VARLEN:
        bos, eos = sequence_bounds(cu_seqlens, i_n)
    else:
        bos = i_n.to(tl.int64) * T
        eos = bos + T
    o_k = i_k * BK + tl.arange(0, BK)
    o_m = tl.arange(0, BM)
    m_k, m_m = o_k < K, o_m < M
    m_km = m_k[:, None] & m_m[None, :]
    p_h = i_nh.to(tl.int64) * K * M + o_k[:, None] * M + o_m[None, :]

    b_h = tl.zeros([BK, BM], dtype=tl.float32)  # [BK, BM]
    if USE_H0:
        b_h += tl.load(h0 + p_h, mask=m_km, other=0)
    for t in range(bos, eos):
        b_k = _load_feature(k + t * stride_k + i_h * K + o_k, m_k, SWISH)  # [BK]
        b_s, b_g = _load_gate(s, g, t, i_h, stride_g, gate_norm, o_m, m_m, M, GATE)  # [BM]
        b_h = b_h * tl.exp(b_g)[None, :] + b_k[:, None] * b_s[None, :]
        for i_g in range(G):
            i_hq = i_h * G + i_g
            b_q = _load_feature(q + t * stride_q + i_hq * K + o_k, m_k, SWISH)  # [BK]
            b_a = tl.sum(b_q[:, None] * b_h, 0) * scale  # [BM]
            tl.store(part + ((t * HQ + i_hq) * NK + i_k) * BM + o_m, b_a)
    if STORE_HT:
        tl.store(ht + p_h, b_h, mask=m_km)


@triton.jit
def fused_recurrent_gsa_fwd_kernel_v(part, s, g, v, h0, ht, o, cu_seqlens, T, stride_v, stride_g, gate_norm,
                                     H: tl.constexpr, HQ: tl.constexpr, V: tl.constexpr, M: tl.constexpr,
                                     BV: tl.constexpr, BM: tl.constexpr, NK: tl.constexpr, BNK: tl.constexpr,
                                     USE_H0: tl.constexpr, STORE_HT: tl.constexpr, IS_VARLEN: tl.constexpr,
                                     LINEAR: tl.constexpr, SWISH: tl.constexpr, GATE: tl.constexpr,
                                     PDL: tl.constexpr):
    G: tl.constexpr = HQ // H
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    if IS_VARLEN:
        bos, eos = sequence_bounds(cu_seqlens, i_n)
    else:
        bos = i_n.to(tl.int64) * T
        eos = bos + T
    o_v = i_v * BV + tl.arange(0, BV)
    o_m = tl.arange(0, BM)
    o_nk = tl.arange(0, BNK)
    m_v, m_m = o_v < V, o_m < M
    m_mv = m_m[:, None] & m_v[None, :]
    m_pm = (o_nk < NK)[:, None] & m_m[None, :]
    p_h = i_nh.to(tl.int64) * M * V + o_m[:, None] * V + o_v[None, :]

    b_h = tl.zeros([BM, BV], dtype=tl.float32)  # [BM, BV]
    if USE_H0:
        b_h += tl.load(h0 + p_h, mask=m_mv, other=0)
    if PDL:
        # The value state was read before the wait: kernel_k (the kernel before this one) does not write it, and
        # what ran before kernel_k was complete when kernel_k let this kernel start (it waits first). Everything
        # kernel_k writes (the partial scores) is read after it.
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    for t in range(bos, eos):
        b_v = _load_feature(v + t * stride_v + i_h * V + o_v, m_v, SWISH)  # [BV]
        b_s, b_g = _load_gate(s, g, t, i_h, stride_g, gate_norm, o_m, m_m, M, GATE)  # [BM]
        b_h = b_h * tl.exp(b_g)[:, None] + b_s[:, None] * b_v[None, :]
        for i_g in range(G):
            i_hq = i_h * G + i_g
            p_part = part + ((t * HQ + i_hq) * NK + o_nk[:, None]) * BM + o_m[None, :]
            b_a = tl.sum(tl.load(p_part, mask=m_pm, other=0), 0)  # [BM]
            if LINEAR:  # the no-softmax ablation reads with the scores themselves
                b_p = b_a
            else:
                b_p = tl.sum(masked_softmax(b_a[None, :], m_m[None, :]), 0)  # [BM]
            b_o = tl.sum(b_p[:, None] * b_h, 0)  # [BV]
            tl.store(o + (t * HQ + i_hq) * V + o_v, b_o.to(o.dtype.element_ty), mask=m_v)
    if STORE_HT:
        tl.store(ht + p_h, b_h, mask=m_mv)


def token_rows(x: torch.Tensor) -> torch.Tensor:
    """x [B, T, heads, D] as the kernels read it: each token's heads x D values dense, tokens at one stride. Views of
    a fused projection's output (tokens W apart) pass as they are; anything else is made contiguous."""
    B, T, Hx, D = x.shape
    if x.stride(3) == 1 and x.stride(2) == D and (B == 1 or x.stride(0) == T * _row_stride(x)):
        return x
    return x.contiguous()


def _row_stride(x: torch.Tensor) -> int:
    """The stride between consecutive tokens of x [B, T, heads, D] read as B * T rows (any value with one token)."""
    return x.stride(1) if x.shape[1] > 1 else (x.stride(0) if x.shape[0] > 1 else x.shape[2] * x.shape[3])


def fused_recurrent_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: torch.Tensor | None, g: torch.Tensor,
                        scale: float, hk0: torch.Tensor | None, hv0: torch.Tensor | None, hkT: torch.Tensor | None,
                        hvT: torch.Tensor | None, cu_seqlens: torch.Tensor | None, linear_read: bool = False,
                        swish: bool = False, gate_norm: float = 0.0) -> torch.Tensor:
    """Run the recurrence on [B, T, H, D] inputs from (hk0, hv0) (zeros when None) and write the final states into
    hkT [N, H, K, M] / hvT [N, H, M, V] when given (they may be hk0 / hv0 themselves: each tile is read before it
    is written, by the same program). Returns o [B, T, HQ, V] in q's dtype. q, k and v may be token-strided views
    (`token_rows`), s and g are contiguous. swish: apply SiLU to q, k and v as they are read. gate_norm > 0: g
    holds the slot logits f (token rows, may be a view like q) and s is unused: g = logsigmoid(f) / gate_norm and
    s = 1 - exp(g) are computed in the kernels, in float32."""
    B, T, HQ, K = q.shape
    H, V, M = k.shape[2], v.shape[-1], g.shape[-1]
    check_slots(M)
    gate = gate_norm > 0
    stride_g = _row_stride(g) if gate else H * M
    s = g if gate else s  # unread with GATE
    N = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    # tiles narrow (64 -> 16) while the programs would not fill the GPU once: at B = 1 and the 1.3B heads a decode
    # step ran 32 programs a kernel, 6.8 us a layer for both kernels (docs/log.md, "Decoding"), latency-bound
    BK, BV, BM = state_tile(K, N * H, q.device), state_tile(V, N * H, q.device), block(M, 128)
    NK = cdiv(K, BK)
    part = q.new_empty(B * T, HQ, NK, BM, dtype=torch.float32)
    o = q.new_empty(B, T, HQ, V)
    common = dict(USE_H0=hk0 is not None, IS_VARLEN=cu_seqlens is not None, SWISH=swish, GATE=gate, num_warps=4,
                  **pdl_launch(q.device))
    fused_recurrent_gsa_fwd_kernel_k[(NK, N * H)](
        q, k, s, g, hk0, hkT, part, cu_seqlens, scale, T, _row_stride(q), _row_stride(k), stride_g, gate_norm,
        H=H, HQ=HQ, K=K, M=M, BK=BK, BM=BM, NK=NK,
        STORE_HT=hkT is not None, **common)
    fused_recurrent_gsa_fwd_kernel_v[(cdiv(V, BV), N * H)](
        part, s, g, v, hv0, hvT, o, cu_seqlens, T, _row_stride(v), stride_g, gate_norm, H=H, HQ=HQ, V=V, M=M,
        BV=BV, BM=BM, NK=NK, BNK=next_pow2(NK), STORE_HT=hvT is not None, LINEAR=linear_read,
        **common)
    return o


def _fused_recurrent(q, k, v, s, g, scale, hk0, hv0, output_final_state, cu_seqlens, linear_read=False):
    N = q.shape[0] if cu_seqlens is None else cu_seqlens.shape[0] - 1
    H, K, V, M = k.shape[2], k.shape[3], v.shape[3], s.shape[3]
    if output_final_state:
        hkT = q.new_empty(N, H, K, M, dtype=torch.float32)
        hvT = q.new_empty(N, H, M, V, dtype=torch.float32)
    else:
        hkT = hvT = None
    o = fused_recurrent_fwd(q, k, v, s, g, scale, hk0, hv0, hkT, hvT, cu_seqlens, linear_read)
    if not output_final_state:
        hkT, hvT = q.new_empty((0,), dtype=torch.float32), q.new_empty((0,), dtype=torch.float32)
    return o, hkT, hvT


@torch.library.custom_op("gsa::fused_recurrent", mutates_args=())
def fused_recurrent_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: torch.Tensor, g: torch.Tensor,
                       scale: float, hk0: torch.Tensor | None, hv0: torch.Tensor | None, output_final_state: bool,
                       cu_seqlens: torch.Tensor | None, linear_read: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """o [B, T, HQ, V] and, when output_final_state, fresh final states (else empty tensors)."""
    return _fused_recurrent(q, k, v, s, g, scale, hk0, hv0, output_final_state, cu_seqlens, linear_read)


@fused_recurrent_op.register_fake
def _(q, k, v, s, g, scale, hk0, hv0, output_final_state, cu_seqlens, linear_read=False):
    N = q.shape[0] if cu_seqlens is None else cu_seqlens.shape[0] - 1
    H, K, V, M = k.shape[2], k.shape[3], v.shape[3], s.shape[3]
    f32 = dict(dtype=torch.float32)
    if output_final_state:
        return q.new_empty(*q.shape[:3], V), q.new_empty(N, H, K, M, **f32), q.new_empty(N, H, M, V, **f32)
    return q.new_empty(*q.shape[:3], V), q.new_empty((0,), **f32), q.new_empty((0,), **f32)


@torch.library.custom_op("gsa::fused_recurrent_inplace", mutates_args=("hk", "hv"))
def fused_recurrent_inplace_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: torch.Tensor,
                               g: torch.Tensor, scale: float, hk: torch.Tensor, hv: torch.Tensor,
                               cu_seqlens: torch.Tensor | None, linear_read: bool = False) -> torch.Tensor:
    """o [B, T, HQ, V]; the states hk [N, H, K, M] / hv [N, H, M, V] are advanced in place over the T steps."""
    return fused_recurrent_fwd(q, k, v, s, g, scale, hk, hv, hk, hv, cu_seqlens, linear_read)


@fused_recurrent_inplace_op.register_fake
def _(q, k, v, s, g, scale, hk, hv, cu_seqlens, linear_read=False):
    return q.new_empty(*q.shape[:3], v.shape[3])


def fused_recurrent_gsa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: torch.Tensor, g: torch.Tensor,
                        scale: float, initial_state: tuple[torch.Tensor, torch.Tensor] | None = None,
                        output_final_state: bool = False, cu_seqlens: torch.Tensor | None = None,
                        inplace: bool = False, linear_read: bool = False):
    """GSA forward, token by token (no autograd: decoding). Arguments as `gsa.ops.gated_slot_attention`.

    inplace: advance `initial_state` (float32, contiguous, owned by the caller for this purpose) in place and
    return it as the final state: a decode step then allocates only its output. Otherwise nothing passed in is
    written. linear_read: read the slots with the scores themselves (the no-softmax ablation). Returns
    o [B, T, HQ, V] and the final states (or None)."""
    q, k, v = (token_rows(x) for x in (q, k, v))  # views of one fused projection stay views: no copies
    s, g = s.contiguous(), g.contiguous()
    # eager calls skip the dispatcher (tens of microseconds a call); compiled graphs see the custom ops
    compiling = torch.compiler.is_compiling()
    if inplace:
        assert initial_state is not None, "inplace needs the state buffers as initial_state"
        hk, hv = initial_state
        assert hk.is_contiguous() and hv.is_contiguous() and hk.dtype == hv.dtype == torch.float32
        if compiling:
            o = fused_recurrent_inplace_op(q, k, v, s, g, scale, hk, hv, cu_seqlens, linear_read)
        else:
            o = fused_recurrent_fwd(q, k, v, s, g, scale, hk, hv, hk, hv, cu_seqlens, linear_read)
        return o, ((hk, hv) if output_final_state else None)
    hk0, hv0 = (None, None) if initial_state is None else (x.contiguous() for x in initial_state)
    op = fused_recurrent_op if compiling else _fused_recurrent
    o, hkT, hvT = op(q, k, v, s, g, scale, hk0, hv0, output_final_state, cu_seqlens, linear_read)
    return o, ((hkT, hvT) if output_final_state else None)


@torch.library.custom_op("gsa::fused_recurrent_step", mutates_args=("hk", "hv"))
def fused_recurrent_step_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, f: torch.Tensor, scale: float,
                            gate_norm: float, swish: bool, hk: torch.Tensor, hv: torch.Tensor,
                            linear_read: bool = False) -> torch.Tensor:
    """o [B, T, HQ, V] from raw q/k/v and slot logits f; the states are advanced in place."""
    return fused_recurrent_fwd(q, k, v, None, f, scale, hk, hv, hk, hv, None, linear_read, swish, gate_norm)


@fused_recurrent_step_op.register_fake
def _(q, k, v, f, scale, gate_norm, swish, hk, hv, linear_read=False):
    return q.new_empty(*q.shape[:3], v.shape[3])


def fused_recurrent_gsa_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, f: torch.Tensor, scale: float,
                             gate_norm: float, state: tuple[torch.Tensor, torch.Tensor], swish: bool = True,
                             linear_read: bool = False) -> torch.Tensor:
    """The decode step from raw projections, in place (arguments validated by gsa.ops.gated_slot_attention_step):
    the feature map (swish) and the gate (g = logsigmoid(f) / gate_norm, s = 1 - exp(g)) are computed inside the
    two recurrent kernels, so a layer's step launches two kernels after its projection. q/k/v/f may be views of
    one fused projection output (`token_rows`). Returns o [B, T, HQ, V] in q's dtype."""
    q, k, v, f = (token_rows(x) for x in (q, k, v, f))
    hk, hv = state
    if torch.compiler.is_compiling():
        return fused_recurrent_step_op(q, k, v, f, scale, gate_norm, swish, hk, hv, linear_read)
    return fused_recurrent_fwd(q, k, v, None, f, scale, hk, hv, hk, hv, None, linear_read, swish, gate_norm)
