"""RMSNorm with float32 statistics."""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square normalisation over the last dimension, with a learned gain.

    x: [..., D] -> [..., D] in x's dtype. The mean square and the rescaling are computed in float32 for half
    precision inputs (float64 stays float64), because in bf16 the sum of D squares loses the low bits that the
    normalisation amplifies.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        if dim <= 0:
            raise ValueError(f"RMSNorm dim must be positive, got {dim}")
        if not eps > 0:
            raise ValueError(f"RMSNorm eps must be positive, got {eps}")
        self.dim = dim
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"RMSNorm expects last dim {self.dim}, got shape {tuple(x.shape)}")
        acc = torch.promote_types(x.dtype, torch.float32)
        xf = x.to(acc)
        y = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (y * self.weight.to(acc)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"
