"""Ungated (ABC) mode as a gated call (docs/algorithm.md, 'Recurrence': the ungated ABC mode).

ABC writes with a cumulative softmax of the slot logits. With z_t = logcumsumexp_{j<=t} s_j per slot, the
gated recurrence on s'_t = exp(s_t - z_t) and g'_t = z_{t-1} - z_t (g'_first = 0 in each sequence) computes
exactly ABC, so every backend needs only the gated path. Note s' = 1 - exp(g'), as in the GSA layer.
"""

from __future__ import annotations

import torch


def abc_to_gated(s: torch.Tensor, offsets: list[int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """s: [B, T, H, M] slot logits -> (s', g'), both [B, T, H, M] float32 (float64 for float64 input).

    offsets: host list of cu_seqlens (the normaliser restarts at each packed sequence) or None.
    Differentiable.
    """
    x = s.double() if s.dtype == torch.float64 else s.float()
    bounds = [0, x.shape[1]] if offsets is None else offsets
    s_out, g_out = [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        seg = x[:, a:b]
        z = torch.logcumsumexp(seg, dim=1)
        s_out.append(torch.exp(seg - z))
        g_out.append(torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1] - z[:, 1:]], dim=1))
    return torch.cat(s_out, dim=1), torch.cat(g_out, dim=1)
