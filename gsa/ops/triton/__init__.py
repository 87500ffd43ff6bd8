"""Triton kernels for GSA (docs/algorithm.md, "Chunked algorithm", "Backward", "Decoding"): the chunked training
path and the fused recurrent decode. Their run-time switches are one object, `SETTINGS` (settings.py).

Importing this package imports triton; `gsa.ops.api` imports it only when the triton backend is used.
"""

from __future__ import annotations

import torch

from gsa.ops.triton.chunk import chunk_gsa
from gsa.ops.triton.fused_recurrent import fused_recurrent_gsa, fused_recurrent_gsa_step
from gsa.ops.triton.settings import SETTINGS, KernelSettings

# Up to this many steps, and with no gradient wanted, the fused recurrent kernels run instead of the chunked ones.
RECURRENT_MAX_T = 16


def gsa_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: torch.Tensor, g: torch.Tensor, scale: float,
               initial_state: tuple[torch.Tensor, torch.Tensor] | None, output_final_state: bool,
               cu_seqlens: torch.Tensor | None, keep_states: bool | None = None, linear_read: bool = False,
               ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """The triton backend of `gsa.ops.gated_slot_attention` (arguments already validated, g not None).

    q: [B, T, HQ, K], k: [B, T, H, K], v: [B, T, H, V], s/g: [B, T, H, M], initial_state (hk [N, H, K, M],
    hv [N, H, M, V]) float32. Returns o [B, T, HQ, V] in q's dtype and float32 final states (or None).
    keep_states: keep the chunk-start states from the forward for the backward instead of recomputing them (None:
    SETTINGS.keep_states).
    Differentiable in every tensor input; never writes into them. Short inputs that need no gradient (decoding)
    take the fused recurrent kernels. linear_read: slot_read="linear" (the no-softmax ablation).
    """
    if q.shape[1] <= RECURRENT_MAX_T and not _needs_grad(q, k, v, s, g, initial_state):
        return fused_recurrent_gsa(q, k, v, s, g, scale, initial_state, output_final_state, cu_seqlens,
                                   linear_read=linear_read)
    return chunk_gsa(q, k, v, s, g, scale, initial_state, output_final_state, cu_seqlens, keep_states, linear_read)


def _needs_grad(*xs) -> bool:
    if not torch.is_grad_enabled():
        return False
    flat = [t for x in xs if x is not None for t in (x if isinstance(x, tuple) else (x,))]
    return any(t.requires_grad for t in flat)


__all__ = ["RECURRENT_MAX_T", "SETTINGS", "KernelSettings", "chunk_gsa", "fused_recurrent_gsa",
           "fused_recurrent_gsa_step", "gsa_triton"]
