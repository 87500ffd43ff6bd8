"""The chunked GSA op (training path): forward and backward launchers, registered as torch.library custom ops
with fake implementations and autograd, so torch.compile(fullgraph=True) sees two opaque ops.

Tensors enter as [B, T, H, D] and are viewed as one packed sequence [TT, H, D] (TT = B * T).
"""

from __future__ import annotations

import torch

from gsa.ops.triton.chunk_a import chunk_bwd_dp, chunk_fwd_a
from gsa.ops.triton.chunk_ds import chunk_bwd_ds
from gsa.ops.triton.chunk_dx import chunk_bwd_dx, dx_tiles
from gsa.ops.triton.chunk_dh import chunk_bwd_dh
from gsa.ops.triton.chunk_h import chunk_fwd_h
from gsa.ops.triton.chunk_o import chunk_o
from gsa.ops.triton.cumsum import chunk_local_cumsum, reverse_cumsum_dg
from gsa.ops.triton.chunks import BT, max_chunks, prepare_chunks
from gsa.ops.triton.launch import (
    check_slots, chunk_state_dtype, compile_in_parallel, dot_precision, launch_key, state_grad_dtype,
)
from gsa.ops.triton.settings import SETTINGS
from gsa.ops.triton.streams import join, side_stream

_EMPTY = (0,)


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-2], x.shape[-1])


def _empty(x: torch.Tensor) -> torch.Tensor:
    # a custom op's outputs must not alias each other: one fresh empty tensor per absent output
    return x.new_empty(_EMPTY, dtype=torch.float32)


def _contiguous(*xs):
    # the kernels assume dense layouts; autograd and torch.compile may hand over strided cotangents
    return [None if x is None else x.contiguous() for x in xs]


def _fwd_impl(q, k, v, s, g, scale, hk0, hv0, output_final_state, keep_states, cu_seqlens, linear_read):
    q, k, v, s, g, hk0, hv0 = _contiguous(q, k, v, s, g, hk0, hv0)
    B, T, HQ, K = q.shape
    H, V, M = k.shape[2], v.shape[-1], s.shape[-1]
    chunks = prepare_chunks(cu_seqlens, B, T, q.device)
    nt = max_chunks(cu_seqlens, B, T)
    prec = dot_precision(q.dtype)
    qf, kf, vf, sf = _flat(q), _flat(k), _flat(v), _flat(s)
    gl = chunk_local_cumsum(_flat(g), chunks)
    side = side_stream(q.device, B * T * HQ)
    # the value pass's walk needs nothing of the key pass's: on the side stream, beside it and kernel_a
    hv, hvT = chunk_fwd_h(vf, sf, gl, hv0, chunks, nt, output_final_state, True, prec, keep_states, side)
    hk, hkT = chunk_fwd_h(kf, sf, gl, hk0, chunks, nt, output_final_state, False, prec, keep_states)
    A, L, P = chunk_fwd_a(qf, kf, sf, gl, hk, chunks, scale, prec, linear_read)
    join(side)
    # the second pass reads with softmax(A1) (from A1 and its rows' statistics L), or with A1 itself (L None)
    o = chunk_o(A, L, gl, P, vf, hv, chunks, 1.0, q.dtype, prec)
    if not keep_states:
        hk = hv = None
    # absent outputs are None here (the eager path passes them on as they are); the custom op returns empty tensors
    return (o.view(B, T, HQ, V), A.view(B, T, HQ, M), None if L is None else L.view(B, T, HQ, 2), gl.view(B, T, H, M),
            P.view(B, T, HQ, BT), hkT, hvT, hk, hv)


def _tensors(q: torch.Tensor, outputs: tuple) -> tuple:
    """The custom ops' outputs: each absent (None) one as a fresh empty tensor (a custom op returns tensors that
    do not alias each other). The eager path skips these allocations (~6 a fwd+bwd)."""
    return tuple(_empty(q) if x is None else x for x in outputs)


@torch.library.custom_op("gsa::chunk_fwd", mutates_args=())
def chunk_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: torch.Tensor, g: torch.Tensor,
                 scale: float, hk0: torch.Tensor | None, hv0: torch.Tensor | None, output_final_state: bool,
                 keep_states: bool, cu_seqlens: torch.Tensor | None, linear_read: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                            torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns o [B, T, HQ, V]; A1 [B, T, HQ, M], its rows' softmax statistics L [B, T, HQ, 2] (max and log-sum;
    empty with linear_read), Gl [B, T, H, M] and the second pass's mixing matrices
    P [B, T, HQ, BT] (the chunk length chunks.BT, 64 by default; float32, kept for backward); the final states (empty
    unless output_final_state) and the chunk-start states (empty unless keep_states)."""
    return _tensors(q, _fwd_impl(q, k, v, s, g, scale, hk0, hv0, output_final_state, keep_states, cu_seqlens,
                                 linear_read))


@chunk_fwd_op.register_fake
def _(q, k, v, s, g, scale, hk0, hv0, output_final_state, keep_states, cu_seqlens, linear_read=False):
    B, T, HQ, K = q.shape
    H, V, M = k.shape[2], v.shape[-1], s.shape[-1]
    N = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    f32 = dict(dtype=torch.float32)
    fin = output_final_state
    nt = max_chunks(cu_seqlens, B, T)
    return (q.new_empty(B, T, HQ, V), q.new_empty(B, T, HQ, M, **f32),
            _empty(q) if linear_read else q.new_empty(B, T, HQ, 2, **f32), q.new_empty(B, T, H, M, **f32),
            q.new_empty(B, T, HQ, BT, **f32),
            q.new_empty(N, H, K, M, **f32) if fin else _empty(q), q.new_empty(N, H, M, V, **f32) if fin else _empty(q),
            q.new_empty(nt, H, K, M, dtype=chunk_state_dtype(q.dtype, True, fin)) if keep_states else _empty(q),
            q.new_empty(nt, H, V, M, dtype=chunk_state_dtype(q.dtype, True, fin)) if keep_states else _empty(q))


def _bwd_impl(q, k, v, s, g, A, L, gl, P, do, scale, hk0, hv0, dhkT, dhvT, hkT, hvT, hk, hv, cu_seqlens,
              linear_read):
    q, k, v, s, g, A, L, gl, P, do, hk0, hv0, dhkT, dhvT, hk, hv = _contiguous(
        q, k, v, s, g, A, L, gl, P, do, hk0, hv0, dhkT, dhvT, hk, hv)
    B, T, HQ, K = q.shape
    H, V, M = k.shape[2], v.shape[-1], s.shape[-1]
    chunks = prepare_chunks(cu_seqlens, B, T, q.device)
    nt = max_chunks(cu_seqlens, B, T)
    prec = dot_precision(q.dtype)
    qf, kf, vf, sf, dof = _flat(q), _flat(k), _flat(v), _flat(s), _flat(do)
    Af, glf = _flat(A), _flat(gl)
    Lf = None if linear_read else L.view(-1, HQ, 2)  # softmax(A1) = exp((A1 - max) - log_sum)
    recompute = hk is None
    want0 = hk0 is not None
    # dg's chunk-boundary term (cumsum.py), in parts per D tile of each pass. From 16-bit chunk states
    # (SETTINGS.chunk_states = "input") it carries their rounding, which a final-state cotangent makes large near the
    # sequence's end (2-3.6x the torch backend's dg error in fp16 at T 65-130, 1.02-1.06x without one at T 65-4096):
    # there the whole-sequence sum is taken instead (as good at short T, degrading with T). "auto" recomputes float32
    # states where final-state cotangents arrive, and keeps float32 ones where the forward returned final states.
    final = dhkT is not None or dhvT is not None
    if recompute:
        states = (chunk_state_dtype(k.dtype, True, final), chunk_state_dtype(v.dtype, True, final))
    else:
        states = (hk.dtype, hv.dtype)
    boundary = states == (torch.float32, torch.float32) or not final
    nk = dx_tiles(K, M)
    parts = torch.empty(nk + dx_tiles(V, M), nt, H, M, dtype=torch.float32, device=q.device) if boundary else None
    # The value pass first, then the key pass: with recomputation each pass's chunk-start states (NT * H * D * M
    # floats) are dropped before the other's are built, so the two never coexist with both state gradients
    # (1.3b shape: 128 MiB each).
    # Each reverse walk runs on the side stream (streams.py) beside what does not need it: dhv beside the value
    # pass's recomputed states and dP; dhk (after dA) beside dv and the key pass's recomputed states. The same
    # tensors are alive at once as in one stream.
    side = side_stream(q.device, B * T * HQ)
    grads = state_grad_dtype(q.dtype, final)  # dH's storage: 16-bit only where no final-state cotangent arrives
    dhv, dhv0 = chunk_bwd_dh(dof, Af, Lf, glf, dhvT, chunks, nt, 1.0, want0, True, prec, side, grads)
    if recompute:
        hv, _ = chunk_fwd_h(vf, sf, glf, hv0, chunks, nt, False, True, prec, True, final_states=final)
    dA, dGq, P1 = chunk_bwd_dp(dof, vf, sf, glf, hv, Af, Lf, chunks, prec, linear_read)
    join(side)
    dhk, dhk0 = chunk_bwd_dh(qf, dA, None, glf, dhkT, chunks, nt, scale, want0, False, prec, side, grads)
    dv = chunk_bwd_dx(_flat(P), dof, sf, glf, dhv, chunks, 1.0, v.dtype, prec,
                      *((hv, parts[nk:]) if boundary else ()))
    del hv
    if recompute:
        hk, _ = chunk_fwd_h(kf, sf, glf, hk0, chunks, nt, False, False, prec, True, final_states=final)
    dq = chunk_o(dA, None, glf, P1, kf, hk, chunks, scale, q.dtype, prec)
    join(side)
    dk = chunk_bwd_dx(P1, qf, sf, glf, dhk, chunks, scale, k.dtype, prec, *((hk, parts[:nk]) if boundary else ()))
    del hk, P1
    ds, dG = chunk_bwd_ds(qf, kf, vf, dof, sf, glf, Af, Lf, dA, dGq, dhk, dhv, chunks, scale, prec)
    # final states read the whole sequence's decay: their cotangents enter dG at each sequence's last step
    dgT = None
    if dhkT is not None:
        dgT = (hkT * dhkT).sum(-2)
    if dhvT is not None:
        dgv = (hvT * dhvT).sum(-1)
        dgT = dgv if dgT is None else dgT + dgv
    dg = reverse_cumsum_dg(dG, None if dgT is None else dgT.contiguous(), parts, chunks, g.dtype)
    return dq.view_as(q), dk.view_as(k), dv.view_as(v), ds.view_as(s), dg.view_as(g), dhk0, dhv0


@torch.library.custom_op("gsa::chunk_bwd", mutates_args=())
def chunk_bwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: torch.Tensor, g: torch.Tensor,
                 A: torch.Tensor, L: torch.Tensor, gl: torch.Tensor, P: torch.Tensor, do: torch.Tensor, scale: float,
                 hk0: torch.Tensor | None, hv0: torch.Tensor | None, dhkT: torch.Tensor | None,
                 dhvT: torch.Tensor | None, hkT: torch.Tensor | None, hvT: torch.Tensor | None, hk: torch.Tensor | None,
                 hv: torch.Tensor | None, cu_seqlens: torch.Tensor | None, linear_read: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                            torch.Tensor]:
    """Returns dq, dk, dv, ds, dg and the initial-state gradients (empty without an initial state)."""
    return _tensors(q, _bwd_impl(q, k, v, s, g, A, L, gl, P, do, scale, hk0, hv0, dhkT, dhvT, hkT, hvT, hk, hv,
                                 cu_seqlens, linear_read))


@chunk_bwd_op.register_fake
def _(q, k, v, s, g, A, L, gl, P, do, scale, hk0, hv0, dhkT, dhvT, hkT, hvT, hk, hv, cu_seqlens, linear_read=False):
    return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(s),
            torch.empty_like(g), _empty(q) if hk0 is None else torch.empty_like(hk0),
            _empty(q) if hv0 is None else torch.empty_like(hv0))


def _setup_context(ctx, inputs, output):
    q, k, v, s, g, scale, hk0, hv0, output_final_state, keep_states, cu_seqlens, linear_read = inputs
    o, A, L, gl, P, hkT, hvT, hk, hv = output
    ctx.mark_non_differentiable(*(x for x in (A, L, gl, P, hk, hv) if x is not None))
    # Gradients of unused outputs arrive as None, not as zero tensors autograd would fill: A, L, gl and P are float32
    # [B, T, H, M]-sized (1.3b shape: 3 fills, 16 us a step; 16 heads of 64: 123 us).
    ctx.set_materialize_grads(False)
    ctx.scale = scale
    ctx.output_final_state = output_final_state
    ctx.keep_states = keep_states
    ctx.has_h0 = hk0 is not None
    ctx.linear_read = linear_read
    ctx.save_for_backward(q, k, v, s, g, A, L, gl, P, hk0, hv0, hkT, hvT, hk, hv, cu_seqlens)


def _backward(ctx, do, dA, dL, dgl, dP, dhkT, dhvT, dhk, dhv, bwd=None):
    """The op's backward through `bwd`: _bwd_impl itself for eager calls (_EagerChunk), else (None) the registered
    custom op, which torch.compile traces."""
    q, k, v, s, g, A, L, gl, P, hk0, hv0, hkT, hvT, hk, hv, cu_seqlens = ctx.saved_tensors
    if not ctx.output_final_state:
        dhkT = dhvT = None
    if do is None:  # only the final states were used
        do = q.new_zeros(*q.shape[:-1], v.shape[-1])
    if not ctx.keep_states:
        hk = hv = None
    dq, dk, dv, ds, dg, dhk0, dhv0 = (bwd or chunk_bwd_op)(
        q, k, v, s, g, A, L, gl, P, do, ctx.scale, hk0, hv0, dhkT, dhvT,
        hkT if ctx.output_final_state else None, hvT if ctx.output_final_state else None, hk, hv, cu_seqlens,
        ctx.linear_read)
    if not ctx.has_h0:
        dhk0 = dhv0 = None
    return dq, dk, dv, ds, dg, None, dhk0, dhv0, None, None, None, None


chunk_fwd_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerChunk(torch.autograd.Function):
    """chunk_fwd_op and its autograd without the custom op's dispatch, for eager calls: the same _fwd_impl,
    _setup_context, _backward and _bwd_impl, minus ~0.15 ms of host time a forward+backward (the dispatcher's
    argument handling of two ops with 12 and 20 arguments, measured on a 2-core CPU host; docs/log.md, "Kernels").
    Host time is what a small op waits on: at B 1 T 2K (1.3b-b1) the GPU works 0.46 ms of a 1.75 ms fwd+bwd."""

    @staticmethod
    def forward(ctx, q, k, v, s, g, scale, hk0, hv0, output_final_state, keep_states, cu_seqlens, linear_read):
        inputs = (q, k, v, s, g, scale, hk0, hv0, output_final_state, keep_states, cu_seqlens, linear_read)
        output = _fwd_impl(*inputs)
        _setup_context(ctx, inputs, output)
        return output

    @staticmethod
    def backward(ctx, *grads):
        return _backward(ctx, *grads, bwd=_bwd_impl)


# Compile a new configuration's kernels in parallel before its first call (SETTINGS.prewarm): on CUDA,
# eager calls only (a torch.compile trace sees fake tensors; its graphs then compile at their first run, serially).
_prewarmed: set = set()


def _prewarm(q, k, v, s, g, scale, hk0, hv0, output_final_state, keep_states, cu_seqlens, linear_read):
    """One pass of the forward (and of the backward when autograd will need it) with every launch queued for
    compilation instead of run, once per configuration and process."""
    backward = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (q, k, v, s, g, hk0, hv0))
    key = (q.device, q.dtype, k.dtype, v.dtype, s.dtype, g.dtype, q.shape[2:], k.shape[2:], v.shape[-1],
           s.shape[-1], hk0 is not None, output_final_state, keep_states, cu_seqlens is not None, linear_read,
           backward, launch_key())
    if key in _prewarmed:
        return
    _prewarmed.add(key)
    with torch.no_grad(), compile_in_parallel():
        o, A, L, gl, P, hkT, hvT, hk, hv = _fwd_impl(q, k, v, s, g, scale, hk0, hv0, output_final_state,
                                                     keep_states, cu_seqlens, linear_read)
        if backward:
            fin = output_final_state
            _bwd_impl(q, k, v, s, g, A, L, gl, P, torch.empty_like(o), scale, hk0, hv0,
                      torch.empty_like(hkT) if fin else None, torch.empty_like(hvT) if fin else None,
                      hkT if fin else None, hvT if fin else None, hk if keep_states else None,
                      hv if keep_states else None, cu_seqlens, linear_read)


def chunk_gsa(q, k, v, s, g, scale: float, initial_state, output_final_state: bool, cu_seqlens,
              keep_states: bool | None = None, linear_read: bool = False):
    """Chunked GSA on [B, T, H, D] tensors (arguments as `gsa.ops.gated_slot_attention`, already validated).

    keep_states: keep the chunk-start states from the forward for the backward (faster, + NT * H * (K + V) * M
    floats, stored as SETTINGS.chunk_states says) instead of recomputing them; None: SETTINGS.keep_states.
    linear_read: the second pass reads the slots with the scores A1 themselves instead of softmax(A1) (the no-softmax
    ablation). Returns o and the final states (or None)."""
    check_slots(s.shape[-1])
    keep_states = SETTINGS.keep_states if keep_states is None else keep_states
    q, k, v, s, g = (x.contiguous() for x in (q, k, v, s, g))
    hk0, hv0 = (None, None) if initial_state is None else (x.contiguous() for x in initial_state)
    if SETTINGS.prewarm and q.is_cuda and not torch.compiler.is_compiling():
        _prewarm(q, k, v, s, g, scale, hk0, hv0, output_final_state, keep_states, cu_seqlens, linear_read)
    # torch.compile traces the registered op; eager calls skip its dispatch (_EagerChunk)
    fwd = chunk_fwd_op if torch.compiler.is_compiling() else _EagerChunk.apply
    o, _, _, _, _, hkT, hvT, _, _ = fwd(q, k, v, s, g, scale, hk0, hv0, output_final_state, keep_states, cu_seqlens,
                                     linear_read)
    return o, ((hkT, hvT) if output_final_state else None)
