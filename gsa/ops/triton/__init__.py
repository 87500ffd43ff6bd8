"""Triton kernels for GSA (GSA_SPEC.md sections 2-4): the chunked training path and the fused recurrent decode.

Importing this package imports triton; `gsa.ops.api` imports it only when the triton backend is used.
"""

from __future__ import annotations

import torch

from gsa.ops.triton.chunk import chunk_gsa


def gsa_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: torch.Tensor, g: torch.Tensor, scale: float,
               initial_state: tuple[torch.Tensor, torch.Tensor] | None, output_final_state: bool,
               cu_seqlens: torch.Tensor | None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """The triton backend of `gsa.ops.gated_slot_attention` (arguments already validated, g not None).

    q: [B, T, HQ, K], k: [B, T, H, K], v: [B, T, H, V], s/g: [B, T, H, M], initial_state (hk [N, H, K, M],
    hv [N, H, M, V]) float32. Returns o [B, T, HQ, V] in q's dtype and float32 final states (or None).
    Differentiable in every tensor input; never writes into them.
    """
    return chunk_gsa(q, k, v, s, g, scale, initial_state, output_final_state, cu_seqlens)


__all__ = ["chunk_gsa", "gsa_triton"]
