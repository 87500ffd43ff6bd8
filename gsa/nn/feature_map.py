"""The feature maps a GSA layer applies to q, k and v (gsa.nn.GatedSlotAttention's `feature_map`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# swish: SiLU on q, k and v (the paper's layer); relu: ReLU on q and k, SiLU on v (fla's "relu" feature map, whose
# layer always applies SiLU to v); identity: q, k and v as projected (layers converted from a Transformer).
FEATURE_MAPS = ("swish", "relu", "identity")


def apply_feature_map(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, feature_map: str
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v (any shapes) -> the three after `feature_map` (one of FEATURE_MAPS), each in its own dtype."""
    if feature_map == "swish":
        return F.silu(q), F.silu(k), F.silu(v)
    if feature_map == "relu":
        return F.relu(q), F.relu(k), F.silu(v)
    if feature_map == "identity":
        return q, k, v
    raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}")
