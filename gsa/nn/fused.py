"""One matrix for several projections of the same input, for inference.

At decode time (one token a step) each projection is a matrix-vector product bound by reading its weights, and a
small one does not reach the GPU's bandwidth: q, k, v and the slot logits of a GSA layer are four reads of 4-16 MB,
the MLP's gate and up two more. `FusedLinears` concatenates the weights once into one [sum(out), in] matrix and makes
each `nn.Linear`'s weight (and bias) a view of it, so the projections cost one product and no extra memory, and
in-place updates of the weights (`load_state_dict`, an optimizer step) reach the fused matrix too.

Only used without autograd (`torch.is_grad_enabled()` False) and for at most `FUSE_MAX_TOKENS` tokens (decoding).
The views are parameters of their own, so training and any backward go through the separate Linears. A long
prefill keeps its separate products, whose outputs can be freed one by one: one fused output would stay alive
until its last slice is used (13 GB more at 32 x 32K tokens of GSA-1.3B). A module holding one drops it when its
parameters are moved or cast (`Module._apply`), since those replace the parameters' storage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gsa.ops.device import on_device_of

FUSE_MAX_TOKENS = 256  # decode steps have B tokens; beyond this the separate products are as fast

def decode_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, role: str) -> torch.Tensor:
    """F.linear(x, weight, bias), through the one-token GEMV kernel (`gsa.ops.triton.gemv`) when `role` is in
    `gsa.ops.triton.SETTINGS.decode_gemv` and the kernel applies (one token on a CUDA GPU with programmatic
    dependent launch)."""
    if x.is_cuda and role in _decode_gemv_roles():
        from gsa.ops.triton.gemv import gemv, gemv_applies

        if gemv_applies(x, weight):
            with on_device_of(x):  # Triton launches on the current device (gsa.ops.device)
                return gemv(x, weight, bias)
    return F.linear(x, weight, bias)


def _decode_gemv_roles() -> frozenset:
    from gsa.ops.triton.settings import SETTINGS

    return SETTINGS.decode_gemv


def use_fused(fused: "FusedLinears | None", x: torch.Tensor) -> bool:
    """Whether a module holding `fused` should use it for input x [..., in] (static under torch.compile)."""
    return fused is not None and not torch.is_grad_enabled() and x.numel() // x.shape[-1] <= FUSE_MAX_TOKENS


class FusedLinears:
    """linears: nn.Linear modules with the same in_features, dtype and device (their weights become views); role:
    the product's name in gsa.ops.triton.SETTINGS.decode_gemv."""

    def __init__(self, *linears: nn.Linear, role: str = ""):
        self.role = role
        wrapped = [type(m).__name__ for m in linears if not isinstance(m, nn.Linear)]
        if wrapped:  # e.g. peft's LoRA layers: one product of the base weights would drop their adapters
            raise ValueError(f"FusedLinears needs plain nn.Linear projections, got {wrapped} (merge adapters into "
                             "the weights first, e.g. peft's merge_and_unload())")
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

    def views_of(self, *linears: nn.Linear) -> bool:
        """Whether these are the Linears this was made from, their weights still views of it (fusing them again
        would only copy the weights once more)."""
        start = 0
        for m, n in zip(linears, self.sizes):
            if m.weight.data_ptr() != self.weight[start : start + n].data_ptr():
                return False
            start += n
        return len(linears) == len(self.sizes)

    def product(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., in] -> [..., sum(out_i)], the outputs of the Linears side by side."""
        return decode_linear(x, self.weight, self.bias, self.role)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x: [..., in] -> one [..., out_i] tensor per Linear (views of one product)."""
        return self.product(x).split(self.sizes, dim=-1)


class FusesProjections(nn.Module):
    """Base of the modules whose projections of one input can be fused for decoding (their `fuse_projections`)."""

    _fused: FusedLinears | None = None

    def _fuse(self, role: str, *linears: nn.Linear) -> None:
        if self._fused is None or not self._fused.views_of(*linears):
            self._fused = FusedLinears(*linears, role=role)

    def _apply(self, fn, recurse: bool = True):
        self._fused = None  # moving or casting replaces the parameters' storage: the fused matrix would go stale
        return super()._apply(fn, recurse)
