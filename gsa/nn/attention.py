"""The Gated Slot Attention layer (docs/algorithm.md, "The layer"; paper Eq. 8-9)."""

from __future__ import annotations

from dataclasses import fields

import torch
import torch.nn.functional as F
from torch import nn

from gsa.nn.conv import ShortConvolution
from gsa.nn.decode_step import decodes_from_logits, step_from_logits
from gsa.nn.feature_map import LearnedFeatureMap, apply_feature_map
from gsa.nn.fused import FusesProjections, decode_linear, use_fused
from gsa.nn.gates import SPREAD, SlotGateProjection, spread_slot_logits
from gsa.nn.masks import check_contiguous_tokens, padding_mask
from gsa.nn.norm import RMSNorm
from gsa.nn.options import LayerOptions
from gsa.nn.state import GSAState
from gsa.nn.window import hybrid_window
from gsa.ops import gated_slot_attention, slot_gates
from gsa.ops.validation import check_cu_seqlens_type


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
    `feature_map="learned"` applies a LearnedFeatureMap per query head to q and per kv head to k (identity at
    init; fitted to a teacher's attention weights in gsa.convert; no convolution, v as projected).
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
    (`rope_theta`), over the W most recent tokens and the first `num_sink_tokens` of its sequence (gsa.nn.window), on q,
    k and v as projected (before the feature map, which shapes the slot read only: a map fitted for the slots must not
    change the teacher's attention), and mixes the two per head: o = (1 - memory_scale[h]) * o_window + memory_scale[h]
    * o_slots. memory_scale starts at zero, so a converted layer starts as the teacher's sliding-window attention and
    learns how much of the slot memory (everything the window no longer sees) to mix in. A convex mix, not a sum: the
    window's softmax already has all the mass, and the teacher's output is a mix of recent and older values (on a tiny
    teacher, stage 1 lowered its loss 0.67 -> 0.49 in 48 steps this way, and not at all as a sum). The decoding state
    gains a fixed-size buffer of the window's keys and values.
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
        o = LayerOptions(
            hidden_size, num_heads, num_kv_heads, num_slots, expand_k, expand_v, gate_logit_normalizer, norm_eps,
            use_short_conv, conv_size, conv_bias, scale, feature_map, feature_map_after_conv, use_output_norm,
            output_norm_affine, qkv_bias, forget_gate, slot_read, window_size, num_sink_tokens, rope_theta, gate_bias,
            gate_bias_range)
        self.hidden_size, self.num_heads, self.num_kv_heads, self.num_slots = (
            o.hidden_size, o.num_heads, o.num_kv_heads, o.num_slots)
        self.head_k_dim, self.head_v_dim = o.head_k_dim, o.head_v_dim
        self.gate_logit_normalizer = o.gate_logit_normalizer
        self.use_short_conv, self.feature_map, self.feature_map_after_conv = (
            o.use_short_conv, o.feature_map, o.feature_map_after_conv)
        self.use_output_norm, self.forget_gate, self.slot_read = o.use_output_norm, o.forget_gate, o.slot_read
        self.window_size, self.num_sink_tokens, self.rope_theta = o.window_size, o.num_sink_tokens, o.rope_theta
        self.scale = self.head_k_dim**-0.5 if o.scale is None else o.scale
        # A run-time speed/memory knob, not a model property (so not a config field): keep the op's chunk states
        # for the backward instead of recomputing them (triton backend; see gated_slot_attention's keep_states; None:
        # gsa.ops.triton.SETTINGS.keep_states).
        self.keep_states = None

        K, V, H, HQ, M = self.head_k_dim, self.head_v_dim, self.num_kv_heads, self.num_heads, self.num_slots
        self.q_proj = nn.Linear(o.hidden_size, HQ * K, bias=o.qkv_bias)
        self.k_proj = nn.Linear(o.hidden_size, H * K, bias=o.qkv_bias)
        self.v_proj = nn.Linear(o.hidden_size, H * V, bias=o.qkv_bias)
        if o.forget_gate == "fixed":
            # Slot decays spread from short to long memory (alpha = sigmoid(logit) ** (1 / tau)), so the slots differ
            # from the start; zeros would give every slot the same decay and the same gradient.
            self.f_logit = nn.Parameter(spread_slot_logits(H, M))
        elif o.gate_bias:
            self.f_proj = SlotGateProjection(o.hidden_size, H, M, o.gate_bias_range)
        else:
            self.f_proj = nn.Linear(o.hidden_size, H * M, bias=False)
        if o.use_short_conv:
            self.q_conv = ShortConvolution(HQ * K, o.conv_size, bias=o.conv_bias)
            self.k_conv = ShortConvolution(H * K, o.conv_size, bias=o.conv_bias)
            self.v_conv = ShortConvolution(H * V, o.conv_size, bias=o.conv_bias)
        if o.feature_map == "learned":
            self.q_map, self.k_map = LearnedFeatureMap(HQ, K), LearnedFeatureMap(H, K)
        if o.use_output_norm:
            self.o_norm = RMSNorm(HQ * V, eps=o.norm_eps, elementwise_affine=o.output_norm_affine)
        if o.window_size:
            self.memory_scale = nn.Parameter(torch.zeros(HQ))  # the slot memory's share per query head
        self.o_proj = nn.Linear(HQ * V, o.hidden_size, bias=False)

    @classmethod
    def from_options(cls, options: LayerOptions) -> GatedSlotAttention:
        """The layer of a config's `layer_options()` (GSAConfig, ZoologyConfig): its arguments as one object."""
        return cls(**{f.name: getattr(options, f.name) for f in fields(options)})

    def fuse_projections(self) -> None:
        """Compute q, k, v (and the slot logits) as one matrix product when autograd is off (decoding); the
        weights become views of one matrix, so no memory is added (see gsa.nn.fused)."""
        self._fuse("qkvf", self.q_proj, self.k_proj, self.v_proj, *([self.f_proj] if hasattr(self, "f_proj") else []))

    def _projections(self, x: torch.Tensor, keep_inputs: bool = False) -> tuple:
        """x: [B, T, d] -> q [B, T, HQ*K], k [B, T, H*K], v [B, T, H*V] (after the feature map, unless a short
        convolution follows), slot logits [B, T, H*M] (None for fixed decays), and with keep_inputs (q, k, v) before
        the feature map, what a hybrid layer's window reads (else None)."""
        feature_map = "identity" if self.use_short_conv else self.feature_map
        if use_fused(self._fused, x):
            y = self._fused.product(x)
            n = sum(self._fused.sizes[:3])
            f = y[..., n:] if len(self._fused.sizes) > 3 else None
            if feature_map == "swish" and not keep_inputs:  # one kernel for the three; q, k, v stay views of it
                return *F.silu(y[..., :n]).split(self._fused.sizes[:3], dim=-1), f, None
            q, k, v = y[..., :n].split(self._fused.sizes[:3], dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
            f = self.f_proj(x) if hasattr(self, "f_proj") else None
        inputs = (q, k, v)
        q, k, v = apply_feature_map(q, k, v, feature_map)
        if feature_map == "learned":
            q, k = self.q_map(q), self.k_map(k)
        return q, k, v, f, inputs if keep_inputs else None

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

        attention_mask: [B, T], 1 = token, 0 = padding, bool or 0 / 1 values (gsa.nn.masks). A padded position writes
            nothing: its k, v and s are zero and its gate is 1 (g = 0), so the slot memories pass through unchanged,
            and the convolutions see a zero input there. With left padding every real token's output equals that
            of its sequence run alone; without a short convolution, with any padding. A layer with a short
            convolution refuses padding between tokens, and right padding when it returns a state.
        cu_seqlens: [N + 1] offsets of N sequences packed along T (B == 1), for training or a packed prefill; no
            state or conv tap crosses a boundary, and output_state returns one state per sequence (batch N). Not
            combinable with an input state or with attention_mask.
        state: the state after the preceding tokens (decoding); zeros when None. Not modified, unless inplace_state.
        output_state: return the new state (a fresh GSAState; the op never aliases its inputs).
        inplace_state: advance `state` in place and return that same object (decoding from buffers the caller owns,
            e.g. GSACache's: a step allocates no state). Needs output_state, contiguous float32 hk/hv and no
            autograd (the op checks).
        """
        if not isinstance(hidden_states, torch.Tensor) or hidden_states.ndim != 3 \
                or hidden_states.shape[-1] != self.hidden_size:
            got = tuple(hidden_states.shape) if isinstance(hidden_states, torch.Tensor) else type(hidden_states)
            raise ValueError(f"hidden_states must be [B, T, {self.hidden_size}], got {got}")
        if hidden_states.dtype != self.q_proj.weight.dtype and not torch.is_autocast_enabled(hidden_states.device.type):
            raise TypeError(f"hidden_states must have the layer's dtype {self.q_proj.weight.dtype} (or run under "
                            f"autocast), got {hidden_states.dtype}")
        B, T, _ = hidden_states.shape
        if state is not None and not isinstance(state, GSAState):
            raise TypeError(f"state must be a GSAState (or None), got {type(state).__name__}")
        if cu_seqlens is not None:
            check_cu_seqlens_type(cu_seqlens, B)  # before the convolutions read it; the op checks its values
        if cu_seqlens is not None and (state is not None or inplace_state or attention_mask is not None):
            raise ValueError("cu_seqlens (packed sequences, each from a zero state) cannot be combined with "
                             "attention_mask or an input state")
        if self.forget_gate == "none" and (state is not None or output_state):
            raise ValueError("forget_gate='none' (ABC) runs full sequences only: its cumulative-softmax normaliser is "
                             "not part of the recurrent state, so it cannot continue from or return a state")
        mask = None
        if attention_mask is not None:
            mask = padding_mask(attention_mask, B, T)
            if self.use_short_conv:
                check_contiguous_tokens(mask, output_state)
            if self.forget_gate == "none":
                if not bool(mask.all()):
                    raise ValueError("forget_gate='none' (ABC) does not support padding; pack sequences with "
                                     "cu_seqlens")
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
        if decodes_from_logits(self, x, mask, cu_seqlens, inplace_state):
            return self._output(step_from_logits(self, x, state)), state
        # a hybrid layer's window reads q, k, v before the feature map: it is the teacher's own softmax attention,
        # and a map fitted for the slots (learned, or swish) must not change it
        q, k, v, f, window_qkv = self._projections(x, keep_inputs=bool(self.window_size))
        conv_state = None
        if self.use_short_conv:
            prev = state.conv if state is not None else (None, None, None)
            q, cq = self.q_conv(q, mask, cu_seqlens, prev[0], output_state, inplace_state)
            k, ck = self.k_conv(k, mask, cu_seqlens, prev[1], output_state, inplace_state)
            v, cv = self.v_conv(v, mask, cu_seqlens, prev[2], output_state, inplace_state)
            conv_state = (cq, ck, cv) if output_state else None
            window_qkv = (q, k, v)  # the convolution's SiLU is part of the projection the window reads
            if self.feature_map_after_conv:
                q, k, v = apply_feature_map(q, k, v, self.feature_map)
        H, HQ = self.num_kv_heads, self.num_heads
        heads = (HQ, H, H)
        q, k, v = (t.view(B, T, h, -1) for t, h in zip((q, k, v), heads))
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
            wq, wk, wv = (t.view(B, T, h, -1) for t, h in zip(window_qkv, heads))
            if mask is not None:
                wk, wv = wk * keep, wv * keep
            o_window, window_state = hybrid_window(
                wq, wk, wv, mask, cu_seqlens, None if state is None else state.window, output_state, inplace_state,
                self.window_size, self.num_sink_tokens, self.scale, self.rope_theta)
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
