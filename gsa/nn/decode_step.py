"""The GSA layer's fused decode step: q, k, v and the slot logits from one fused projection, fed raw to
gated_slot_attention_step (which applies the feature map and the gate itself), advancing owned state buffers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from gsa.nn.fused import use_fused
from gsa.nn.state import GSAState
from gsa.ops import gated_slot_attention_step

if TYPE_CHECKING:
    from gsa.nn.attention import GatedSlotAttention


def decodes_from_logits(layer: GatedSlotAttention, x: torch.Tensor, mask: torch.Tensor | None,
                        cu_seqlens: torch.Tensor | None, inplace_state: bool) -> bool:
    """Whether this call is a decode step that gated_slot_attention_step can run from the fused projection's
    raw output: fused projections in use (no autograd, few tokens), owned state buffers advanced in place, no
    padding or packing, and a layer whose feature map and gate the step computes itself."""
    return (inplace_state and mask is None and cu_seqlens is None and use_fused(layer._fused, x)
            and not layer.use_short_conv and layer.forget_gate == "data" and not layer.window_size
            and layer.feature_map in ("swish", "identity"))


def step_from_logits(layer: GatedSlotAttention, x: torch.Tensor, state: GSAState) -> torch.Tensor:
    """x [B, T, d] -> o [B, T, HQ, V], advancing state in place. q, k, v and the slot logits stay column views
    of the one fused product; on CUDA the recurrent kernels apply swish and the gate themselves, so the step
    launches no element-wise kernel between the projection and the two recurrent kernels."""
    B, T, _ = x.shape
    HQ, H, K, V, M = layer.num_heads, layer.num_kv_heads, layer.head_k_dim, layer.head_v_dim, layer.num_slots
    q, k, v, f = layer._fused.product(x).split(layer._fused.sizes, dim=-1)
    return gated_slot_attention_step(
        q.view(B, T, HQ, K), k.view(B, T, H, K), v.view(B, T, H, V), f.view(B, T, H, M), (state.hk, state.hv),
        scale=layer.scale, gate_logit_normalizer=layer.gate_logit_normalizer, feature_map=layer.feature_map,
        slot_read=layer.slot_read)
