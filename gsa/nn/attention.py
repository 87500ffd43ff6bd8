"""The Gated Slot Attention layer (docs/algorithm.md, "The layer"; paper Eq. 8-9)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gsa.nn.conv import ShortConvolution
from gsa.nn.feature_map import FEATURE_MAPS, apply_feature_map
from gsa.nn.fused import FusesProjections, decode_linear, use_fused
from gsa.nn.norm import RMSNorm
from gsa.nn.window import (
    WindowState, advance_window, banded_window_attention, empty_window_state, rotary, token_positions, window_attention,
)
from gsa.ops import gated_slot_attention, gated_slot_attention_step, slot_gates
from gsa.ops.validation import SLOT_READS


SPREAD = (-4.0, 4.0)  # the default range of spread_slot_logits


def spread_slot_logits(heads: int, slots: int, span: tuple[float, float] = SPREAD) -> torch.Tensor:
    """[heads, slots]: gate logits linspace(*span) over each head's slots, so the slots start at different decays
    (alpha = sigmoid(logit) ** (1 / tau)): the "fixed" gate's init and gate_bias's W_f bias. A span (b, b) gives
    every slot the same logit b."""
    return torch.linspace(float(span[0]), float(span[1]), slots).repeat(heads, 1)


def check_gate_bias_range(span, owner: str, gate_bias: bool = True) -> tuple[float, float]:
    """(lo, hi) as floats, or a ValueError naming `owner` (the argument's full name). A range other than the default
    needs gate_bias (without the bias it spreads it would be ignored silently)."""
    ok = isinstance(span, (list, tuple)) and len(span) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < float("inf") for v in span)
    if not ok or span[0] > span[1]:
        raise ValueError(f"{owner} must be two finite numbers (lo, hi) with lo <= hi, got {span!r}")
    span = float(span[0]), float(span[1])
    if span != SPREAD and not gate_bias:
        raise ValueError(f"{owner}={list(span)} needs gate_bias=True (it sets W_f's bias)")
    return span


class SlotGateProjection(nn.Linear):
    """W_f with a bias spread over each head's slots (the layer's gate_bias=True): b = linspace(lo, hi, M) per head,
    by default (-4, 4), so at init (W_f x ~ 0) the slots keep sigmoid(b) ** (1 / tau) of themselves a token:
    0.61 ... 0.998 at tau 8, memories of ~2 to ~440 tokens, instead of 0.917 (~12 tokens) for every slot. The same
    spread as the "fixed" gate, with the data-dependent part kept. span (b, b): every slot starts at logit b (b = 4:
    memories of ~440 tokens). `spread_bias()` is the init (the model's _init_weights copies it in)."""

    def __init__(self, in_features: int, heads: int, slots: int, span: tuple[float, float] = SPREAD):
        super().__init__(in_features, heads * slots, bias=True)
        self.slots, self.span = slots, check_gate_bias_range(span, "gate_bias_range")
        with torch.no_grad():
            self.bias.copy_(self.spread_bias())

    def spread_bias(self) -> torch.Tensor:
        """[heads * slots]: spread_slot_logits over the span, flattened."""
        return spread_slot_logits(self.out_features // self.slots, self.slots, self.span).flatten()


@dataclass
class GSAState:
    """One layer's recurrent state for B sequences.

    hk: [B, H, K, M] and hv: [B, H, M, V], the two slot memories (float32; float64 for a float64 model).
    conv: the last W - 1 inputs of the q, k and v short convolutions, each [B, W - 1, C], or None when the layer
        has no short convolution.
    window: the sliding-window keys, values, positions and token counts of a hybrid layer (window_size > 0; layout
        in gsa.nn.window), or None.
    """

    hk: torch.Tensor
    hv: torch.Tensor
    conv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    window: WindowState | None = None

    @property
    def batch_size(self) -> int:
        return self.hk.shape[0]

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor of the state, in a fixed order (all have the batch first)."""
        return [self.hk, self.hv, *(self.conv or ()), *(self.window or ())]

    def map(self, fn) -> GSAState:
        """A new state with `fn` applied to every tensor."""
        conv = None if self.conv is None else tuple(fn(c) for c in self.conv)
        window = None if self.window is None else tuple(fn(w) for w in self.window)
        return GSAState(fn(self.hk), fn(self.hv), conv, window)


FORGET_GATES = ("data", "fixed", "none")


def check_feature_map_options(feature_map: str, use_short_conv: bool, feature_map_after_conv: bool,
                              conv_bias: bool, owner: str = "") -> None:
    """A ValueError naming the option (prefixed by `owner`, e.g. "GSAConfig.") unless the feature-map and
    convolution options make one layer: identity needs no convolution (its SiLU would be a feature map), and
    without feature_map_after_conv the convolution's SiLU is the feature map, so it must be swish."""
    if feature_map not in FEATURE_MAPS:
        raise ValueError(f"{owner}feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}")
    for name, flag in (("use_short_conv", use_short_conv), ("feature_map_after_conv", feature_map_after_conv),
                       ("conv_bias", conv_bias)):
        if not isinstance(flag, bool):
            raise ValueError(f"{owner}{name} must be a bool, got {flag!r}")
    if feature_map == "identity" and use_short_conv:
        raise ValueError(f"{owner}feature_map='identity' needs use_short_conv=False (the convolution has its own SiLU)")
    if feature_map == "relu" and use_short_conv and not feature_map_after_conv:
        raise ValueError(f"{owner}feature_map='relu' with use_short_conv needs feature_map_after_conv=True (fla's "
                         "layer: ReLU after the convolution's SiLU); without it the convolution's SiLU is the map")
    for name, flag in (("feature_map_after_conv", feature_map_after_conv), ("conv_bias", conv_bias)):
        if flag and not use_short_conv:
            raise ValueError(f"{owner}{name}=True needs use_short_conv=True")


class GatedSlotAttention(FusesProjections):
    """Gated Slot Attention: a recurrent layer with M slots per head and a constant-size state.

    Shapes: hidden_states [B, T, d] -> [B, T, d]. With HQ = num_heads query heads, H = num_kv_heads key/value heads,
    K = d * expand_k / HQ and V = d * expand_v / HQ:

        q = swish(W_q x) [B, T, HQ, K]   k = swish(W_k x) [B, T, H, K]   v = swish(W_v x) [B, T, H, V]
        g = logsigmoid(W_f x) / gate_logit_normalizer  [B, T, H, M]   (log forget gate, <= 0)
        s = 1 - exp(g)                                  (a slot is written exactly as much as it forgets)
        o = gated_slot_attention(q, k, v, s, g, scale)  [B, T, HQ, V]
        y = W_o RMSNorm(swish(concat_heads(o)))         (one RMSNorm over all HQ * V values)

    Grouped heads (H < HQ) share the slot memories inside a group; only the softmax read is per query head.
    With `use_short_conv`, q, k and v first go through a causal depthwise convolution of width `conv_size`
    followed by SiLU, and that SiLU is their feature map. fla's layer applies its feature map (and SiLU on v) a
    second time after the convolution's SiLU: `feature_map_after_conv=True` reproduces that (off by default; on
    for models converted from fla, gsa.convert.fla), and `conv_bias=True` gives the convolutions fla's bias.
    `feature_map="relu"` is fla's other map: ReLU on q and k, SiLU on v. The output RMSNorm has eps `norm_eps`
    and, unless `output_norm_affine=False` (fla's `elementwise_affine=False`), a learned gain.

    `scale` multiplies q . k in the slot read. None (the default) means K ** -0.5, the op's default and ordinary
    attention's: the read logits of swish features grow with K, so without it the slot softmax saturates at large
    head dims (K = 512 at 1.3B), and a Transformer's q/k projections converted into GSA keep their scale. fla's
    layer uses 1.0; pass scale=1.0 to reproduce it.

    Options for a layer converted from a Transformer's attention (gsa.convert): `feature_map="identity"` leaves q, k
    and v as projected (no swish; needs use_short_conv=False), `use_output_norm=False` drops the swish and RMSNorm
    before W_o (y = W_o concat_heads(o), a Transformer's output path), and `qkv_bias` gives W_q, W_k and W_v biases
    (Qwen2). With both of the first two, GSA with one slot per token and no forgetting is softmax attention.

    `forget_gate` selects the paper's ablations: "data" (the default: alpha_t = sigmoid(W_f x_t) ** (1 / tau)),
    "fixed" (a data-independent decay: one learned logit per head and slot replaces W_f x_t; s = 1 - alpha as
    before) and "none" (ABC: W_f x_t are slot logits, written with a cumulative softmax; the op's g=None mode).
    ABC's normaliser is not part of the recurrent state, so "none" runs full sequences only (training,
    perplexity, MQAR): it refuses a decoding state and padding. `slot_read="linear"` is the no-softmax ablation
    (the slot scores are the read weights; every backend runs it). `gate_bias=True` (with "data") gives W_f a bias
    spread over each head's slots (`SlotGateProjection`, linspace(*gate_bias_range)): with the default (-4, 4) the
    slots start with memories of ~2 to ~440 tokens instead of ~12 each; (4, 4) starts every slot at ~440. On a CPU
    MQAR probe the spread left the answer-any-value plateau far sooner (docs/log.md, "MQAR").

    Hybrid layers (T2R): with `window_size` W > 0 each query head also runs exact softmax attention, with RoPE
    (`rope_theta`), over the W most recent tokens and the first `num_sink_tokens` of its sequence (gsa.nn.window),
    on the same q, k and v, and mixes the two per head: o = (1 - memory_scale[h]) * o_window + memory_scale[h] *
    o_slots. memory_scale starts at zero, so a converted layer starts as the teacher's sliding-window attention and
    learns how much of the slot memory (everything the window no longer sees) to mix in. A convex mix, not a sum:
    the window's softmax already has all the mass, and the teacher's output is a mix of recent and older values
    (on a tiny teacher, stage 1 lowered its loss 0.67 -> 0.49 in 48 steps this way, and not at all as a sum). The
    decoding state gains a fixed-size buffer of the window's keys and values.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int = 4,
        num_kv_heads: int | None = None,
        num_slots: int = 64,
        expand_k: float = 1.0,
        expand_v: float = 1.0,
        gate_logit_normalizer: float = 8.0,
        norm_eps: float = 1e-5,
        use_short_conv: bool = False,
        conv_size: int = 4,
        conv_bias: bool = False,
        scale: float | None = None,
        feature_map: str = "swish",
        feature_map_after_conv: bool = False,
        use_output_norm: bool = True,
        output_norm_affine: bool = True,
        qkv_bias: bool = False,
        forget_gate: str = "data",
        slot_read: str = "softmax",
        window_size: int = 0,
        num_sink_tokens: int = 0,
        rope_theta: float = 10000.0,
        gate_bias: bool = False,
        gate_bias_range: tuple[float, float] = SPREAD,
    ):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if hidden_size <= 0 or num_heads <= 0 or num_kv_heads <= 0 or num_slots <= 0:
            raise ValueError(
                f"hidden_size, num_heads, num_kv_heads and num_slots must be positive, got {hidden_size}, "
                f"{num_heads}, {num_kv_heads}, {num_slots}"
            )
        if num_heads % num_kv_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        key_dim, value_dim = hidden_size * expand_k, hidden_size * expand_v
        for name, dim in (("expand_k", key_dim), ("expand_v", value_dim)):
            if dim <= 0 or dim != int(dim) or int(dim) % num_heads != 0:
                raise ValueError(
                    f"hidden_size * {name} = {dim} must be a positive integer divisible by num_heads ({num_heads})"
                )
        if not gate_logit_normalizer > 0:
            raise ValueError(f"gate_logit_normalizer must be positive, got {gate_logit_normalizer}")
        if scale is not None and not scale > 0:
            raise ValueError(f"scale must be positive or None (K ** -0.5), got {scale}")
        if slot_read not in SLOT_READS:
            raise ValueError(f"slot_read must be one of {SLOT_READS}, got {slot_read!r}")
        self.slot_read = slot_read
        for name, value in (("window_size", window_size), ("num_sink_tokens", num_sink_tokens)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if num_sink_tokens and not window_size:
            raise ValueError(f"num_sink_tokens={num_sink_tokens} needs window_size > 0")
        if window_size and not rope_theta > 0:
            raise ValueError(f"rope_theta must be positive, got {rope_theta}")
        self.window_size, self.num_sink_tokens, self.rope_theta = window_size, num_sink_tokens, float(rope_theta)
        if forget_gate not in FORGET_GATES:
            raise ValueError(f"forget_gate must be one of {FORGET_GATES}, got {forget_gate!r}")
        if not isinstance(gate_bias, bool):
            raise ValueError(f"gate_bias must be a bool, got {gate_bias!r}")
        if gate_bias and forget_gate != "data":
            raise ValueError(f"gate_bias=True biases the data-dependent gate's W_f; forget_gate={forget_gate!r} "
                             "has none")
        gate_bias_range = check_gate_bias_range(gate_bias_range, "gate_bias_range", gate_bias)
        check_feature_map_options(feature_map, use_short_conv, feature_map_after_conv, conv_bias)
        for name, flag in (("use_output_norm", use_output_norm), ("qkv_bias", qkv_bias),
                           ("output_norm_affine", output_norm_affine)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be a bool, got {flag!r}")
        if not output_norm_affine and not use_output_norm:
            raise ValueError("output_norm_affine=False needs use_output_norm=True (it removes that norm's gain)")
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.num_slots = num_slots
        self.head_k_dim = int(key_dim) // num_heads
        self.head_v_dim = int(value_dim) // num_heads
        self.gate_logit_normalizer = float(gate_logit_normalizer)
        self.use_short_conv = use_short_conv
        self.feature_map = feature_map
        self.feature_map_after_conv = feature_map_after_conv
        self.use_output_norm = use_output_norm
        self.scale = self.head_k_dim**-0.5 if scale is None else float(scale)
        # A run-time speed/memory knob, not a model property (so not a config field): keep the op's chunk states
        # for the backward instead of recomputing them (triton backend; see gated_slot_attention's keep_states).
        self.keep_states = False

        K, V, H, HQ, M = self.head_k_dim, self.head_v_dim, num_kv_heads, num_heads, num_slots
        self.q_proj = nn.Linear(hidden_size, HQ * K, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, H * K, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden_size, H * V, bias=qkv_bias)
        self.forget_gate = forget_gate
        if forget_gate == "fixed":
            # Slot decays spread from short to long memory (alpha = sigmoid(logit) ** (1 / tau)), so the slots differ
            # from the start; zeros would give every slot the same decay and the same gradient.
            self.f_logit = nn.Parameter(spread_slot_logits(H, M))
        elif gate_bias:
            self.f_proj = SlotGateProjection(hidden_size, H, M, gate_bias_range)
        else:
            self.f_proj = nn.Linear(hidden_size, H * M, bias=False)
        if use_short_conv:
            self.q_conv = ShortConvolution(HQ * K, conv_size, bias=conv_bias)
            self.k_conv = ShortConvolution(H * K, conv_size, bias=conv_bias)
            self.v_conv = ShortConvolution(H * V, conv_size, bias=conv_bias)
        if use_output_norm:
            self.o_norm = RMSNorm(HQ * V, eps=norm_eps, elementwise_affine=output_norm_affine)
        if window_size:
            if K % 2:
                raise ValueError(f"window_size > 0 applies RoPE, which needs an even head_k_dim, got {K}")
            self.memory_scale = nn.Parameter(torch.zeros(HQ))  # the slot memory's share per query head
        self.o_proj = nn.Linear(HQ * V, hidden_size, bias=False)

    def fuse_projections(self) -> None:
        """Compute q, k, v (and the slot logits) as one matrix product when autograd is off (decoding); the
        weights become views of one matrix, so no memory is added (see gsa.nn.fused)."""
        self._fuse("qkvf", self.q_proj, self.k_proj, self.v_proj, *([self.f_proj] if hasattr(self, "f_proj") else []))

    def _projections(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """x: [B, T, d] -> q [B, T, HQ*K], k [B, T, H*K], v [B, T, H*V] (after the feature map, unless a short
        convolution follows), slot logits [B, T, H*M] (None for fixed decays)."""
        feature_map = "identity" if self.use_short_conv else self.feature_map
        if use_fused(self._fused, x):
            y = self._fused.product(x)
            n = sum(self._fused.sizes[:3])
            f = y[..., n:] if len(self._fused.sizes) > 3 else None
            if feature_map == "swish":  # one kernel for the three; q, k, v stay views of it
                return *F.silu(y[..., :n]).split(self._fused.sizes[:3], dim=-1), f
            return *apply_feature_map(*y[..., :n].split(self._fused.sizes[:3], dim=-1), feature_map), f
        q, k, v = apply_feature_map(self.q_proj(x), self.k_proj(x), self.v_proj(x), feature_map)
        return q, k, v, (self.f_proj(x) if hasattr(self, "f_proj") else None)

    def _slot_writes(self, f: torch.Tensor | None, B: int, T: int, dtype: torch.dtype
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """f: the slot logits [B, T, H*M] (None for fixed decays) -> (s, g), each [B, T, H, M] in at least float32
        (g is None for ABC, s its slot logits)."""
        H, M = self.num_kv_heads, self.num_slots
        acc = torch.promote_types(dtype, torch.float32)
        if self.forget_gate == "none":
            return f.view(B, T, H, M).to(acc), None
        f = self.f_logit.expand(B, T, H, M) if self.forget_gate == "fixed" else f.view(B, T, H, M)
        return slot_gates(f.to(acc), self.gate_logit_normalizer)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        state: GSAState | None = None,
        output_state: bool = False,
        inplace_state: bool = False,
    ) -> tuple[torch.Tensor, GSAState | None]:
        """hidden_states: [B, T, d] -> (y [B, T, d], the state after the last token or None).

        attention_mask: [B, T], 1 = token, 0 = padding. A padded position writes nothing: its k, v and s are zero
            and its gate is 1 (g = 0), so the slot memories pass through unchanged, and the convolutions see a zero
            input there. With left padding every real token's output equals that of its sequence run alone.
        cu_seqlens: [N + 1] offsets of N sequences packed along T (B == 1), for training or a packed prefill; no
            state or conv tap crosses a boundary, and output_state returns one state per sequence (batch N). Not
            combinable with an input state or with attention_mask.
        state: the state after the preceding tokens (decoding); zeros when None. Not modified, unless inplace_state.
        output_state: return the new state (a fresh GSAState; the op never aliases its inputs).
        inplace_state: advance `state` in place and return that same object (decoding from buffers the caller owns,
            e.g. GSACache's: a step allocates no state). Needs output_state, contiguous float32 hk/hv and no
            autograd (the op checks).
        """
        B, T, d = hidden_states.shape
        if d != self.hidden_size:
            raise ValueError(f"hidden_states must be [B, T, {self.hidden_size}], got {tuple(hidden_states.shape)}")
        if cu_seqlens is not None and (state is not None or inplace_state or attention_mask is not None):
            raise ValueError("cu_seqlens (packed sequences, each from a zero state) cannot be combined with "
                             "attention_mask or an input state")
        if self.forget_gate == "none" and (state is not None or output_state):
            raise ValueError("forget_gate='none' (ABC) runs full sequences only: its cumulative-softmax normaliser is "
                             "not part of the recurrent state, so it cannot continue from or return a state")
        mask = None
        if attention_mask is not None:
            if tuple(attention_mask.shape) != (B, T):
                raise ValueError(f"attention_mask must be [B, T] = {(B, T)}, got {tuple(attention_mask.shape)}")
            mask = attention_mask.to(torch.bool)
            if self.forget_gate == "none":
                if not bool(mask.all()):
                    raise ValueError("forget_gate='none' (ABC) does not support padding; pack sequences with cu_seqlens")
                mask = None  # all ones: nothing to mask
        if inplace_state and (state is None or not output_state):
            raise ValueError("inplace_state needs a state to advance and output_state=True")
        if state is not None:
            if state.batch_size != B:
                raise ValueError(f"state holds {state.batch_size} sequences, hidden_states has B = {B}")
            if (state.conv is not None) != self.use_short_conv:
                raise ValueError("state.conv must be given exactly when the layer uses a short convolution")
            if (state.window is not None) != bool(self.window_size):
                raise ValueError("state.window must be given exactly when the layer has a window (window_size > 0)")

        x = hidden_states
        if self._decodes_from_logits(x, mask, cu_seqlens, inplace_state):
            return self._output(self._step_from_logits(x, state)), state
        q, k, v, f = self._projections(x)
        conv_state = None
        if self.use_short_conv:
            prev = state.conv if state is not None else (None, None, None)
            q, cq = self.q_conv(q, mask, cu_seqlens, prev[0], output_state, inplace_state)
            k, ck = self.k_conv(k, mask, cu_seqlens, prev[1], output_state, inplace_state)
            v, cv = self.v_conv(v, mask, cu_seqlens, prev[2], output_state, inplace_state)
            conv_state = (cq, ck, cv) if output_state else None
            if self.feature_map_after_conv:
                q, k, v = apply_feature_map(q, k, v, self.feature_map)
        H, HQ, M = self.num_kv_heads, self.num_heads, self.num_slots
        q = q.view(B, T, HQ, self.head_k_dim)
        k = k.view(B, T, H, self.head_k_dim)
        v = v.view(B, T, H, self.head_v_dim)
        s, g = self._slot_writes(f, B, T, x.dtype)
        if mask is not None:
            keep = mask[:, :, None, None]
            k, v = k * keep, v * keep
            g, s = g * keep, s * keep
        s = s.to(q.dtype)
        g = None if g is None else g.to(q.dtype)

        initial = (state.hk, state.hv) if state is not None else None
        o, final = gated_slot_attention(
            q, k, v, s, g, scale=self.scale, initial_state=initial, output_final_state=output_state,
            cu_seqlens=cu_seqlens, inplace_state=inplace_state, keep_states=self.keep_states,
            slot_read=self.slot_read, check_gates=False,  # _slot_writes' gates are <= 0 by construction: no sync
        )
        window_state = None
        if self.window_size:
            o_window, window_state = self._window(q, k, v, mask, cu_seqlens, state, output_state, inplace_state)
            o = o_window + self.memory_scale.to(o.dtype)[:, None] * (o - o_window)  # the convex mix
        y = self._output(o)
        if inplace_state:
            return y, state  # hk, hv and the conv buffers were advanced in place
        new_state = GSAState(final[0], final[1], conv_state, window_state) if output_state else None
        return y, new_state

    def _output(self, o: torch.Tensor) -> torch.Tensor:
        """o [B, T, HQ, V] -> y [B, T, d]: W_o (RMSNorm(swish(o)) or o), over all heads at once."""
        o = o.reshape(*o.shape[:2], -1)
        if self.use_output_norm:
            o = self.o_norm(o, silu_input=True)
        if use_fused(self._fused, o):  # decoding: the one-token product kernel where it applies
            return decode_linear(o, self.o_proj.weight, self.o_proj.bias, "o")
        return self.o_proj(o)

    def _decodes_from_logits(self, x: torch.Tensor, mask: torch.Tensor | None, cu_seqlens: torch.Tensor | None,
                           inplace_state: bool) -> bool:
        """Whether this call is a decode step that gated_slot_attention_step can run from the fused projection's
        raw output: fused projections in use (no autograd, few tokens), owned state buffers advanced in place, no
        padding or packing, and a layer whose feature map and gate the step computes itself."""
        return (inplace_state and mask is None and cu_seqlens is None and use_fused(self._fused, x)
                and not self.use_short_conv and self.forget_gate == "data" and not self.window_size
                and self.feature_map != "relu")

    def _step_from_logits(self, x: torch.Tensor, state: GSAState) -> torch.Tensor:
        """x [B, T, d] -> o [B, T, HQ, V], advancing state in place. q, k, v and the slot logits stay column views
        of the one fused product; on CUDA the recurrent kernels apply swish and the gate themselves, so the step
        launches no element-wise kernel between the projection and the two recurrent kernels."""
        B, T, _ = x.shape
        HQ, H, K, V, M = self.num_heads, self.num_kv_heads, self.head_k_dim, self.head_v_dim, self.num_slots
        q, k, v, f = self._fused.product(x).split(self._fused.sizes, dim=-1)
        return gated_slot_attention_step(
            q.view(B, T, HQ, K), k.view(B, T, H, K), v.view(B, T, H, V), f.view(B, T, H, M), (state.hk, state.hv),
            scale=self.scale, gate_logit_normalizer=self.gate_logit_normalizer, feature_map=self.feature_map,
            slot_read=self.slot_read)

    def _window(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                cu_seqlens: torch.Tensor | None, state: GSAState | None, output_state: bool, inplace_state: bool
                ) -> tuple[torch.Tensor, WindowState | None]:
        """The window half of a hybrid layer: q [B, T, HQ, K], k [B, T, H, K], v [B, T, H, V] (as the slots read
        them) -> (o [B, T, HQ, V], the window state after these tokens when output_state, else None)."""
        B, T = q.shape[:2]
        W, S = self.window_size, self.num_sink_tokens
        cache = None if state is None else state.window
        valid = torch.ones(B, T, dtype=torch.bool, device=q.device) if mask is None else mask
        pos, row = token_positions(valid, cu_seqlens, None if cache is None else cache[3])
        q, k = rotary(q, pos, self.rope_theta), rotary(k, pos, self.rope_theta)
        if cache is None and mask is None and cu_seqlens is None:  # whole rows from position 0: O(T W) work
            o = banded_window_attention(q, k, v, W, S, self.scale)
        else:
            o = window_attention(q, k, v, pos, row, W, S, self.scale, cache, packed=cu_seqlens is not None)
        if not output_state:
            return o, None
        if cache is None:
            N = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
            cache = empty_window_state(N, self.num_kv_heads, self.head_k_dim, self.head_v_dim, W, S, q.device,
                                       torch.promote_types(k.dtype, torch.float32))
            inplace_state = True  # fresh buffers: nobody else holds them
        return o, advance_window(cache, k, v, pos, row, W, S, inplace_state)
