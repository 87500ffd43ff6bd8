"""One matrix for several projections of the same input, for inference.

At decode time (one token a step) each projection is a matrix-vector product bound by reading its weights, and a
small one does not reach the GPU's bandwidth: q, k, v and the slot logits of a GSA layer are four reads of 4-16 MB,
the MLP's gate and up two more. `FusedLinears` concatenates the weights once into one [sum(out), in] matrix and makes
each `nn.Linear`'s weight (and bias) a view of it, so the projections cost one product and no extra memory, and
in-place updates of the weights (`load_state_dict`, an optimizer step) reach the fused matrix too.

Only used without autograd (`torch.is_grad_enabled()` False): the views are parameters of their own, so training
and any backward go through the separate Linears. A module holding one drops it when its parameters are moved or
cast (`Module._apply`), since those replace the parameters' storage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FusedLinears:
    """linears: nn.Linear modules with the same in_features, dtype and device (their weights become views)."""

    def __init__(self, *linears: nn.Linear):
        if len({(m.in_features, m.weight.dtype, m.weight.device) for m in linears}) != 1:
            raise ValueError("FusedLinears needs Linears with one in_features, dtype and device, got "
                             f"{[(m.in_features, m.weight.dtype, str(m.weight.device)) for m in linears]}")
        self.sizes = [m.out_features for m in linears]
        with torch.no_grad():
            self.weight = torch.cat([m.weight for m in linears])
            self.bias = None
            if any(m.bias is not None for m in linears):
                self.bias = torch.cat([m.bias if m.bias is not None else m.weight.new_zeros(m.out_features)
                                       for m in linears])
        start = 0
        for m, n in zip(linears, self.sizes):
            m.weight = nn.Parameter(self.weight[start : start + n], requires_grad=m.weight.requires_grad)
            if m.bias is not None:
                m.bias = nn.Parameter(self.bias[start : start + n], requires_grad=m.bias.requires_grad)
            start += n

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x: [..., in] -> one [..., out_i] tensor per Linear (views of one product)."""
        return F.linear(x, self.weight, self.bias).split(self.sizes, dim=-1)
