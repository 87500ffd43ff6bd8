"""The feature maps a GSA layer applies to q, k and v (gsa.nn.GatedSlotAttention's `feature_map`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# swish: SiLU on q, k and v (the paper's layer); relu: ReLU on q and k, SiLU on v (fla's "relu" feature map, whose
# layer always applies SiLU to v); identity: q, k and v as projected (layers converted from a Transformer);
# learned: a LearnedFeatureMap per head on q and on k, v as projected (converted layers whose maps are fitted to the
# teacher's attention weights, gsa.convert.attention_weights).
FEATURE_MAPS = ("swish", "relu", "identity", "learned")


def apply_feature_map(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, feature_map: str
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v (any shapes) -> the three after `feature_map`'s element-wise part, each in its own dtype ("learned"
    has none: its maps are modules of the layer, applied after this)."""
    if feature_map == "swish":
        return F.silu(q), F.silu(k), F.silu(v)
    if feature_map == "relu":
        return F.relu(q), F.relu(k), F.silu(v)
    if feature_map in ("identity", "learned"):
        return q, k, v
    raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}")


class LearnedFeatureMap(nn.Module):
    """A per-head learned map phi(x) = x + silu(x W1 + b1) W2, [..., heads * dim] -> [..., heads * dim].

    W1, W2: [heads, dim, dim], b1: [heads, dim]. W2 starts at zero, so phi starts as the identity and a converted
    layer starts as the identity-map student. Hedgehog (Zhang et al. 2024) fits such maps so that the student's
    attention weights match the teacher's softmax; its map is softmax over [W x, -W x] because a linear attention
    needs positive kernel scores. GSA's slot read applies its own softmax to q . Hk, so no positivity is needed here,
    and a residual MLP keeps the exact starting point. A purely linear map would add nothing that training q_proj /
    k_proj could not do; the SiLU term is what it adds.
    """

    def __init__(self, heads: int, dim: int):
        super().__init__()
        if heads <= 0 or dim <= 0:
            raise ValueError(f"heads and dim must be positive, got {heads}, {dim}")
        self.heads, self.dim = heads, dim
        self.w1 = nn.Parameter(torch.empty(heads, dim, dim))
        self.b1 = nn.Parameter(torch.empty(heads, dim))
        self.w2 = nn.Parameter(torch.empty(heads, dim, dim))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """The identity map: W1 ~ N(0, 1 / dim) (pre-activations at the input's scale), b1 = 0, W2 = 0."""
        w1 = torch.randn(self.w1.shape, generator=generator, device="cpu") * self.dim**-0.5
        self.w1.copy_(w1.to(self.w1.dtype))
        self.b1.zero_()
        self.w2.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.heads * self.dim:
            raise ValueError(f"x must be [..., {self.heads * self.dim}] (heads * dim), got {tuple(x.shape)}")
        h = x.reshape(*x.shape[:-1], self.heads, self.dim)
        hidden = F.silu(torch.einsum("...hk,hkj->...hj", h, self.w1.to(x.dtype)) + self.b1.to(x.dtype))
        return x + torch.einsum("...hj,hjk->...hk", hidden, self.w2.to(x.dtype)).reshape(x.shape)
