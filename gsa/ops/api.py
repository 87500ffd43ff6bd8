"""`gated_slot_attention`: the public op and its backend choice."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gsa.ops.abc import abc_to_gated
from gsa.ops.chunk import chunk_gsa_torch
from gsa.ops.device import on_device_of
from gsa.ops.reference import recurrent_checked
from gsa.ops.validation import (
    TRITON_MAX_SLOTS,
    check_gate_values,
    check_inplace_state,
    check_inputs,
    check_normalizer,
    slot_read_fn,
)

BACKENDS = ("auto", "triton", "torch", "reference")

# Below this many steps the token loop beats padding to a 64-step chunk (CPU decode and short prompts).
TORCH_RECURRENT_MAX_T = 8


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _triton_backend():
    # Imported on first use only: `import gsa` must work (and stay fast) without triton.
    from gsa.ops.triton import gsa_triton

    return gsa_triton


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """The backend `auto` means for tensors of `dtype` on `device`: triton for CUDA tensors when triton is
    importable (float16, bfloat16, float32: the kernels' types), torch otherwise. Named backends are returned as
    they are."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    if device.type == "cuda" and dtype != torch.float64 and _triton_available():
        try:
            _triton_backend()
        except ImportError:
            return "torch"
        return "triton"
    return "torch"


def triton_runs_on(device: torch.device) -> bool:
    """CUDA devices, and any device under Triton's CPU interpreter (TRITON_INTERPRET=1, the CPU tests). Not asked
    inside torch.compile, which cannot trace the interpreter switch (a compiled call off CUDA still fails, at
    launch)."""
    if device.type == "cuda" or torch.compiler.is_compiling():
        return True
    try:
        import triton
    except ImportError:
        return False
    return bool(triton.knobs.runtime.interpret)


def _backend_for(backend: str, q: torch.Tensor, M: int) -> str:
    """resolve_backend for an op on q's device and dtype with M slots: `auto` takes the torch backend where the
    Triton kernels cannot (M > TRITON_MAX_SLOTS), and an explicit triton there, or off CUDA, is refused."""
    chosen = resolve_backend(backend, q.device, q.dtype)
    if chosen == "triton" and not triton_runs_on(q.device):
        raise ValueError(f"backend='triton' runs on CUDA tensors, got q on {q.device}: use backend='torch' (or "
                         "'auto', which does)")
    if chosen == "triton" and M > TRITON_MAX_SLOTS:
        if backend == "triton":
            raise ValueError(f"backend='triton' takes at most {TRITON_MAX_SLOTS} slots (s.shape[-1] = M), got M = {M}:"
                             " use backend='torch' (or 'auto', which does)")
        return "torch"
    return chosen


def gated_slot_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    s: torch.Tensor,
    g: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    initial_state: tuple[torch.Tensor, torch.Tensor] | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    backend: str = "auto",
    inplace_state: bool = False,
    keep_states: bool | None = None,
    slot_read: str = "softmax",
    check_gates: bool = True,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """Gated Slot Attention (docs/algorithm.md, 'Recurrence'): two gated linear-attention passes joined by a softmax
    over M slots.

    Args:
        q: [B, T, HQ, K] queries. HQ may be a multiple G of H: query head h reads kv head h // G.
        k: [B, T, H, K] keys.
        v: [B, T, H, V] values.
        s: [B, T, H, M] slot write weights (the GSA layer passes 1 - exp(g)); with g=None, slot logits.
        g: [B, T, H, M] log forget gates (<= 0; -inf is a full reset, alpha = exp(g) = 0), or None for the ungated
            ABC mode (cumulative softmax of s).
        scale: multiplies q . k in the first pass only; default K ** -0.5.
        initial_state: (hk [N, H, K, M], hv [N, H, M, V]) float32, N = B or the number of packed sequences;
            default zeros.
        output_final_state: also return the states after the last token of each sequence.
        cu_seqlens: [N + 1] int offsets of N sequences packed along T (B must be 1); no state crosses them.
        backend: "auto" (triton on CUDA with M <= 128 slots, torch elsewhere), "triton", "torch" (chunked
            PyTorch), or "reference" (the token-by-token loop; slow, exact).
        inplace_state: advance `initial_state` in place and return it as the final state (decoding: a step then
            allocates nothing but its output, so it can be captured in a CUDA graph). The two state tensors must be
            contiguous float32 buffers the caller owns for this purpose; no gradient may be required.
        keep_states: (triton) keep each chunk's starting states from the forward for the backward instead of
            recomputing them (faster backward; + N_chunks * H * M * (K + V) floats); None: `SETTINGS.keep_states`
            (gsa.ops.triton). The torch backend keeps what autograd needs either way.
        slot_read: "softmax" (GSA) or "linear" (the no-softmax ablation: the slot scores are the read weights).
        check_gates: refuse (ValueError) a g with a NaN or an entry > 0 (alpha > 1: the memories grow without
            bound, and the float32 backends overflow to NaN). The check reduces g and reads the result on the host,
            a device sync on CUDA, so callers whose gates are <= 0 by construction (the GSA layer and
            gated_slot_attention_step: logsigmoid(f) / normalizer) pass False. Skipped inside torch.compile, where
            the read would break the graph.

    Returns:
        o: [B, T, HQ, V] in q's dtype, and (hk, hv) float32 final states (float64 for float64 inputs) or None.

    Inputs are never modified. Accumulation is float32 (float64 for float64 inputs). On the torch and reference
    backends a NaN or inf in q, k, v or s (in g: NaN or +inf) at step t of a sequence leaves every output before t
    as it is; the outputs and final states it reaches from t on are not finite. The torch backend's chunked path
    (T > 8) also keeps exact gradients for a loss that reads only outputs before t; through the token loop autograd
    multiplies their zero cotangents by non-finite states, so there they are NaN. (The Triton kernels do not hold
    to this yet: tests/ops/test_op_bad_inputs.py marks where.)
    """
    dims, offsets = check_inputs(q, k, v, s, g, scale, initial_state, output_final_state, cu_seqlens)
    flags = (("inplace_state", inplace_state, "a bool"), ("keep_states", keep_states, "a bool or None"),
             ("check_gates", check_gates, "a bool"))
    for name, flag, kinds in flags:
        if not (isinstance(flag, bool) or (flag is None and kinds.endswith("None"))):
            raise TypeError(f"{name} must be {kinds}, got {type(flag).__name__}")
    if inplace_state:
        check_inplace_state(initial_state, (q, k, v, s, g))
    slot_read_fn(slot_read)  # validates (every backend implements every read)
    backend = _backend_for(backend, q, dims.M)
    if check_gates and g is not None and not torch.compiler.is_compiling():
        check_gate_values(g)
    if backend == "triton" and q.dtype == torch.float64:
        raise TypeError("backend='triton' takes float16, bfloat16 or float32 inputs, got torch.float64: use "
                        "backend='torch' (or 'auto')")
    scale = dims.K**-0.5 if scale is None else float(scale)
    with on_device_of(q):  # Triton launches on the current device (gsa.ops.device)
        if inplace_state:
            return _inplace(backend, dims, offsets, q, k, v, s, g, scale, initial_state, cu_seqlens, slot_read)
        return _compute(backend, dims, offsets, q, k, v, s, g, scale, initial_state, output_final_state, cu_seqlens,
                        keep_states, slot_read)


def _compute(backend, dims, offsets, q, k, v, s, g, scale, initial_state, output_final_state, cu_seqlens,
             keep_states, slot_read):
    """Run validated inputs on the resolved backend (`dims, offsets` from check_inputs, scale a float)."""
    if backend == "reference" or (backend == "torch" and dims.T <= TORCH_RECURRENT_MAX_T):
        return recurrent_checked((dims, offsets), q, k, v, s, g, scale=scale, initial_state=initial_state,
                                 output_final_state=output_final_state, slot_read=slot_read)
    if g is None:
        # s' and g' stay float32 (float64 for float64 input) whatever q's dtype: rounding log gates to
        # bf16 would change the function. Backends therefore accept s and g in float32 with any q dtype.
        s, g = abc_to_gated(s, offsets)
    if backend == "triton":
        return _triton_backend()(q, k, v, s, g, scale, initial_state, output_final_state, cu_seqlens,
                                 keep_states=keep_states, linear_read=slot_read == "linear")
    return chunk_gsa_torch(q, k, v, s, g, scale, initial_state, output_final_state, offsets, slot_read=slot_read)


def _inplace(backend, dims, offsets, q, k, v, s, g, scale, state, cu_seqlens, slot_read):
    """The decode path: advance `state` (owned buffers) in place; returns (o, state)."""
    if backend == "triton" and _fused_recurrent_is_faster(q):
        from gsa.ops.triton import fused_recurrent_gsa

        if g is None:
            s, g = abc_to_gated(s, offsets)
        return fused_recurrent_gsa(q, k, v, s, g, scale, state, True, cu_seqlens, inplace=True,
                                   linear_read=slot_read == "linear")
    with torch.no_grad():
        o, (hk, hv) = _compute(backend, dims, offsets, q, k, v, s, g, scale, state, True, cu_seqlens, False,
                               slot_read)
        state[0].copy_(hk)
        state[1].copy_(hv)
    return o, state


def slot_gates(f: torch.Tensor, gate_logit_normalizer: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The GSA layer's gate from its slot logits f [..., M]: (s, g) with g = logsigmoid(f) / gate_logit_normalizer
    (<= 0) and s = 1 - exp(g), in float32 (float64 for float64 f): logsigmoid of a large logit is tiny, and
    1 - exp(g) of a tiny g needs expm1."""
    g = F.logsigmoid(f.to(torch.promote_types(f.dtype, torch.float32))) / check_normalizer(gate_logit_normalizer)
    return -torch.expm1(g), g


def gated_slot_attention_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    f: torch.Tensor,
    state: tuple[torch.Tensor, torch.Tensor],
    *,
    scale: float | None = None,
    gate_logit_normalizer: float = 8.0,
    feature_map: str = "swish",
    slot_read: str = "softmax",
    backend: str = "auto",
) -> torch.Tensor:
    """A decode step of the GSA layer from its raw projections, advancing owned state buffers in place.

    q [B, T, HQ, K], k [B, T, H, K], v [B, T, H, V]: the projections before the feature map ("swish": SiLU,
    "identity": as they are); f [B, T, H, M]: the slot logits. state: (hk [B, H, K, M], hv [B, H, M, V]),
    contiguous float32 buffers the caller owns, advanced in place. Computes what
    gated_slot_attention(phi(q), phi(k), phi(v), s=1 - exp(g), g=logsigmoid(f) / gate_logit_normalizer,
    inplace_state=True) computes (g and s in float32 in the fused kernels, in q's dtype on the other paths, as the
    op takes them). On the triton backend with T <= gsa.ops.triton.RECURRENT_MAX_T the two
    fused recurrent kernels also apply the feature map and the gate (no separate element-wise kernels), and q, k,
    v and f may be column views of one fused projection output. Returns o [B, T, HQ, V] in q's dtype.
    """
    check_inputs(q, k, v, f, None, scale, state, True, None, s_name="f", state_name="state")
    check_inplace_state(state, (q, k, v, f))
    if feature_map not in ("swish", "identity"):
        raise ValueError(f"feature_map must be 'swish' or 'identity', got {feature_map!r}")
    gate_logit_normalizer = check_normalizer(gate_logit_normalizer)
    slot_read_fn(slot_read)
    backend = _backend_for(backend, q, f.shape[-1])
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if backend == "triton" and _fused_recurrent_is_faster(q):
        from gsa.ops.triton import fused_recurrent_gsa_step

        with on_device_of(q):
            return fused_recurrent_gsa_step(q, k, v, f, scale, float(gate_logit_normalizer), state,
                                            swish=feature_map == "swish", linear_read=slot_read == "linear")
    if feature_map == "swish":
        q, k, v = F.silu(q), F.silu(k), F.silu(v)
    # then in q's dtype, which the op's inputs share (the fused kernels keep them in float32)
    s, g = (x.to(q.dtype) for x in slot_gates(f, gate_logit_normalizer))
    o, _ = gated_slot_attention(q, k, v, s, g, scale=scale, initial_state=state, output_final_state=True,
                                backend=backend, inplace_state=True, slot_read=slot_read, check_gates=False)
    return o


def _fused_recurrent_is_faster(q: torch.Tensor) -> bool:
    """Whether the fused recurrent kernels are the faster choice for this many steps."""
    from gsa.ops.triton import RECURRENT_MAX_T as triton_max_t

    return q.shape[1] <= triton_max_t


__all__ = ["BACKENDS", "gated_slot_attention", "gated_slot_attention_step", "resolve_backend", "slot_gates"]
