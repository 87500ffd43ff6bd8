"""Argument checking for the GSA op, done once, before any backend runs.

Every failure names the argument and gives the expected and the actual shape, dtype or device, so a user
never has to read a kernel's stack trace to find a transposed tensor.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch

# The Triton kernels hold a chunk's M slots in one tile; beyond this they would read only the first 128 slots (M = 129
# and 256 came out 2e-3 and 2e-2 off the float64 reference, silently). gsa.ops refuses the triton backend above it and
# `auto` takes the torch backend there.
TRITON_MAX_SLOTS = 128

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# What the Triton kernels compute on (float64 takes the torch paths)
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@dataclass(frozen=True)
class Dims:
    """Sizes of one call. N is the number of sequences (B, or the number of packed segments)."""

    B: int
    T: int
    HQ: int
    H: int
    K: int
    V: int
    M: int
    N: int

    @property
    def G(self) -> int:
        """Query heads per kv head."""
        return self.HQ // self.H


def _check_tensor(name: str, x, ndim: int, layout: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {tuple(x.shape)}")


def _expect_shape(name: str, x: torch.Tensor, expected: tuple, layout: str) -> None:
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {layout} = {tuple(expected)}, got {tuple(x.shape)}")


def check_cu_seqlens_type(cu_seqlens, B: int) -> None:
    """What check_cu_seqlens checks without reading the values (no host sync): a 1-D int32 / int64 tensor of at
    least 2 entries, and a batch of B == 1."""
    if not isinstance(cu_seqlens, torch.Tensor):
        raise TypeError(f"cu_seqlens must be a 1-D integer torch.Tensor, got {type(cu_seqlens).__name__}")
    if cu_seqlens.ndim != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens must be 1-D with N + 1 >= 2 entries, got shape {tuple(cu_seqlens.shape)}")
    if cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"cu_seqlens must be int32 or int64, got {cu_seqlens.dtype}")
    if B != 1:
        raise ValueError(f"cu_seqlens packs sequences along T and needs batch size B == 1, got B = {B}")


_last_read: list = [None, None, None]  # [weakref to the tensor, its version counter then, its values]


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def host_offsets(cu_seqlens: torch.Tensor) -> list[int]:
    """cu_seqlens' values on the host. Reading a CUDA tensor waits for the GPU (a sync), and a packed model step asks
    for the same offsets ~3 times a layer (the op's checks, its forward and its backward launchers): the last tensor
    read is remembered, by identity and version counter (bumped by every in-place write through torch), so while it
    is that same unmodified tensor object its values are not read again. Only CUDA tensors are remembered (a host
    tensor's read costs no sync, and writes through numpy would bypass the counter), and never during a CUDA graph
    capture: there the read fails loudly, as before, instead of baking offsets that a replay after a copy into the
    tensor would not re-read. A returned list is the caller's own."""
    if not cu_seqlens.is_cuda or torch.compiler.is_compiling() or _capturing():
        return cu_seqlens.tolist()
    ref, version, values = _last_read
    if ref is None or ref() is not cu_seqlens or version != cu_seqlens._version:
        values = cu_seqlens.tolist()
        _last_read[:] = [weakref.ref(cu_seqlens), cu_seqlens._version, values]
    return list(values)


def check_cu_seqlens(cu_seqlens, B: int, T: int) -> list[int]:
    """Validate `cu_seqlens` and return it as a host list of N + 1 offsets.

    cu_seqlens: [N + 1] integer tensor, 0 = c_0 < c_1 < ... < c_N = T, and the batch must have B == 1.
    """
    check_cu_seqlens_type(cu_seqlens, B)
    offsets = host_offsets(cu_seqlens)
    if offsets[0] != 0 or offsets[-1] != T:
        raise ValueError(f"cu_seqlens must start at 0 and end at T = {T}, got {offsets[0]} ... {offsets[-1]}")
    for i in range(len(offsets) - 1):
        if offsets[i + 1] <= offsets[i]:
            raise ValueError(
                "cu_seqlens must be strictly increasing (every sequence has at least one token), "
                f"got cu_seqlens[{i}] = {offsets[i]} and cu_seqlens[{i + 1}] = {offsets[i + 1]}"
            )
    return offsets


def check_inputs(q, k, v, s, g, scale, initial_state, output_final_state, cu_seqlens, s_name: str = "s",
                 state_name: str = "initial_state") -> tuple[Dims, list[int] | None]:
    """Check every argument of `gated_slot_attention`; return the sizes and the host offsets of cu_seqlens.
    s_name / state_name: what the caller calls s and initial_state (gated_slot_attention_step: f and state)."""
    _check_tensor("q", q, 4, "[B, T, HQ, K]")
    _check_tensor("k", k, 4, "[B, T, H, K]")
    _check_tensor("v", v, 4, "[B, T, H, V]")
    _check_tensor(s_name, s, 4, "[B, T, H, M]")
    B, T, HQ, K = q.shape
    H = k.shape[2]
    V, M = v.shape[3], s.shape[3]
    _expect_shape("k", k, (B, T, H, K), "[B, T, H, K]")
    _expect_shape("v", v, (B, T, H, V), "[B, T, H, V]")
    _expect_shape(s_name, s, (B, T, H, M), "[B, T, H, M]")
    if g is not None:
        _check_tensor("g", g, 4, "[B, T, H, M]")
        _expect_shape("g", g, (B, T, H, M), "[B, T, H, M]")
    sizes = dict(B=B, T=T, HQ=HQ, H=H, K=K, V=V, M=M)
    if 0 in sizes.values():
        empty = ", ".join(f"{n} = 0" for n, x in sizes.items() if x == 0)
        raise ValueError(f"every size of q [B, T, HQ, K], k, v [B, T, H, V] and s [B, T, H, M] must be positive "
                         f"(an empty batch, sequence or head has nothing to compute), got {empty}")
    if HQ % H != 0:
        raise ValueError(f"q's head count HQ = {HQ} must be a multiple of the kv head count H = {H} (from k)")

    named = [("q", q), ("k", k), ("v", v), (s_name, s)] + ([("g", g)] if g is not None else [])
    if q.dtype not in FLOAT_DTYPES:
        raise TypeError(f"q must be float16, bfloat16, float32 or float64, got {q.dtype}")
    for name, x in named[1:]:
        if x.dtype != q.dtype:
            raise TypeError(f"{name} must have q's dtype {q.dtype}, got {x.dtype}")
        if x.device != q.device:
            raise ValueError(f"{name} must be on q's device {q.device}, got {x.device}")

    if scale is not None:
        _check_positive_finite("scale", scale, "a positive finite float or None (the query scale, K ** -0.5 by "
                               "default)", type_error=TypeError)

    if not isinstance(output_final_state, bool):
        raise TypeError(f"output_final_state must be a bool, got {type(output_final_state).__name__}")

    offsets = None
    if cu_seqlens is not None:
        offsets = check_cu_seqlens(cu_seqlens, B, T)
    N = B if offsets is None else len(offsets) - 1

    if initial_state is not None:
        if not isinstance(initial_state, (tuple, list)) or len(initial_state) != 2:
            raise TypeError(f"{state_name} must be a pair (hk [N, H, K, M], hv [N, H, M, V]) or None")
        state_dtypes = (torch.float32, torch.float64) if q.dtype == torch.float64 else (torch.float32,)
        for name, x, layout, shape in (
            (f"{state_name}[0] (hk)", initial_state[0], "[N, H, K, M]", (N, H, K, M)),
            (f"{state_name}[1] (hv)", initial_state[1], "[N, H, M, V]", (N, H, M, V)),
        ):
            _check_tensor(name, x, 4, layout)
            _expect_shape(name, x, shape, layout)
            if x.dtype not in state_dtypes:
                raise TypeError(
                    f"{name} must be float32 (states are kept in float32; float64 is accepted with float64 "
                    f"inputs), got {x.dtype}"
                )
            if x.device != q.device:
                raise ValueError(f"{name} must be on q's device {q.device}, got {x.device}")

    return Dims(B=B, T=T, HQ=HQ, H=H, K=K, V=V, M=M, N=N), offsets


def _check_positive_finite(name: str, value, what: str, type_error: type[Exception] = ValueError) -> None:
    """`value` must be an int or float (not a bool), positive and finite; else type_error / ValueError saying
    "{name} must be {what}". Under torch.compile a float argument may arrive symbolic (a recompile makes it
    dynamic: a second model's StaticDecoder did on the H100), and math.isfinite cannot be traced on it: only its
    type is checked there, its value in eager calls."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise type_error(f"{name} must be {what}, got {value!r}")
    if not torch.compiler.is_compiling() and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be {what}, got {value!r}")


def check_normalizer(value) -> float:
    """gate_logit_normalizer (tau in g = logsigmoid(f) / tau): a positive finite number (returned as a float
    outside torch.compile). 0 would make every gate -inf (a full reset each token), a negative one gates above 1
    (memories that grow)."""
    _check_positive_finite("gate_logit_normalizer", value, "a positive finite number")
    return value if torch.compiler.is_compiling() else float(value)


def check_gate_values(g: torch.Tensor) -> None:
    """g [B, T, H, M] must be log forget gates: g <= 0 (alpha = exp(g) <= 1; -inf, a full reset, is allowed), no
    NaN. Reads one reduction of g on the host: a device sync, hence the op's `check_gates` switch."""
    top = g.max()
    if top <= 0:
        return
    at = [int(i) for i in ((g > 0) | g.isnan()).nonzero()[0]]
    raise ValueError(f"g holds log forget gates and must be <= 0 (alpha = exp(g) <= 1), got "
                     f"g = {g[tuple(at)].item():.6g} at [b, t, h, m] = {at}; gates made as logsigmoid(f) / normalizer"
                     " are <= 0 by construction (such callers may pass check_gates=False)")


def check_inplace_state(initial_state, inputs) -> None:
    """`inplace_state=True` needs owned, contiguous float32 state buffers and no autograd."""
    if initial_state is None:
        raise ValueError("inplace_state=True needs the state buffers to advance, passed as initial_state=(hk, hv)")
    for name, x in (("initial_state[0] (hk)", initial_state[0]), ("initial_state[1] (hv)", initial_state[1])):
        if x.dtype != torch.float32 or not x.is_contiguous():
            raise ValueError(f"inplace_state=True needs {name} to be a contiguous float32 buffer, got {x.dtype}, "
                             f"contiguous={x.is_contiguous()}")
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (*inputs, *initial_state)):
        raise ValueError("inplace_state=True is for decoding and does not support autograd: run it under "
                         "torch.no_grad() with inputs that do not require grad")


SLOT_READS = ("softmax", "linear")


def slot_read_fn(slot_read):
    """How a query turns its slot scores [..., M] into read weights: softmax (GSA) or as they are ("linear", the
    no-softmax ablation)."""
    if slot_read not in SLOT_READS:
        raise ValueError(f"slot_read must be one of {SLOT_READS}, got {slot_read!r}")
    return (lambda a: torch.softmax(a, dim=-1)) if slot_read == "softmax" else (lambda a: a)


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype states and accumulations use for inputs of `dtype`: float64 stays float64, all else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32
