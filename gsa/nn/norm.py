"""RMSNorm with float32 statistics, as one autograd node that saves only its input and the inverse RMS.

Written through autograd's elementwise ops, an RMSNorm of a [N, D] input keeps about three float32 [N, D]
intermediates for the backward (the upcast input, its square, the normalised output); at training shapes that is
the largest activation cost of a GSA block (1.3B model, 16K tokens: ~0.4 GB per norm, three norms per block). This
node keeps the input (in its own dtype) and rstd [N] and recomputes the rest in the backward.

Inside a torch.compile trace the norm is the same ops without the autograd.Function: inductor fuses them and its
partitioner chooses what to keep itself, and PyTorch 2.11's Dynamo mis-traces this Function (the norm weights'
gradients came out zero and the rest of a compiled block's wrong, with a correct loss, on an H200;
pytorch/pytorch#180642, fixed in 2.12; tests/models/test_compiled_grads.py checks it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gsa.nn.backend import use_triton_kernels
from gsa.ops.device import on_device_of


def _silu_grad(x: torch.Tensor) -> torch.Tensor:
    sig = torch.sigmoid(x)
    return sig * (1 + x * (1 - sig))


def _rms_norm_ops(x: torch.Tensor, weight: torch.Tensor, eps: float, silu_input: bool
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., D] -> (y [..., D] in x's dtype, rstd [..., 1] in at least float32), through autograd's own ops."""
    acc = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(acc)
    if silu_input:
        xf = F.silu(xf)
    rstd = torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (xf * rstd * weight.to(acc)).to(x.dtype), rstd


class _RMSNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps: float, silu_input: bool):
        y, rstd = _rms_norm_ops(x, weight, eps, silu_input)
        ctx.save_for_backward(x, weight, rstd)
        ctx.silu_input = silu_input
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, weight, rstd = ctx.saved_tensors
        acc = rstd.dtype
        xf = x.to(acc)
        xin = F.silu(xf) if ctx.silu_input else xf
        xhat = xin * rstd
        dyf = dy.to(acc)
        wdy = dyf * weight.to(acc)
        dx = rstd * (wdy - xhat * (wdy * xhat).mean(dim=-1, keepdim=True))
        if ctx.silu_input:
            dx = dx * _silu_grad(xf)
        dw = (dyf * xhat).reshape(-1, xhat.shape[-1]).sum(0)
        return dx.to(x.dtype), dw.to(weight.dtype), None, None


def _use_triton(x: torch.Tensor) -> bool:
    if not use_triton_kernels(x):
        return False
    from gsa.ops.triton.norm import MAX_D

    return x.shape[-1] <= MAX_D


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, silu_input: bool = False) -> torch.Tensor:
    """RMSNorm(swish(x) if silu_input else x) * weight over the last dimension; x: [..., D], weight: [D].

    Statistics in float32 (float64 stays float64); the result has x's dtype."""
    if _use_triton(x):
        from gsa.ops.triton.norm import rms_norm_triton

        with on_device_of(x):  # Triton launches on the current device (gsa.ops.device)
            return rms_norm_triton(x, weight, eps, silu_input)
    if torch.compiler.is_compiling():  # see the module docstring
        return _rms_norm_ops(x, weight, eps, silu_input)[0]
    return _RMSNormFn.apply(x, weight, eps, silu_input)


class RMSNorm(nn.Module):
    """Root-mean-square normalisation over the last dimension, with a learned gain.

    x: [..., D] -> [..., D] in x's dtype. The mean square and the rescaling are computed in float32 for half
    precision inputs (float64 stays float64), because in bf16 the sum of D squares loses the low bits that the
    normalisation amplifies.

    elementwise_affine=False: no learned gain (fla's `elementwise_affine=False`). `weight` is then a non-persistent
    buffer of ones (not saved, not trained), so every kernel keeps one signature; multiplying by 1.0 is exact.
    """

    def __init__(self, dim: int, eps: float = 1e-5, elementwise_affine: bool = True):
        super().__init__()
        if dim <= 0:
            raise ValueError(f"RMSNorm dim must be positive, got {dim}")
        if not eps > 0:
            raise ValueError(f"RMSNorm eps must be positive, got {eps}")
        if not isinstance(elementwise_affine, bool):
            raise ValueError(f"RMSNorm elementwise_affine must be a bool, got {elementwise_affine!r}")
        self.dim = dim
        self.eps = float(eps)
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(dim))
        else:
            self.register_buffer("weight", torch.ones(dim), persistent=False)

    def reset_parameters(self) -> None:
        """The gain (or the fixed ones of a norm without one) back to ones."""
        with torch.no_grad():
            self.weight.fill_(1.0)

    def forward(self, x: torch.Tensor, silu_input: bool = False) -> torch.Tensor:
        """x: [..., D] -> [..., D]; silu_input: normalise swish(x) (the gated output norm), recomputed in backward."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"RMSNorm expects last dim {self.dim}, got shape {tuple(x.shape)}")
        return rms_norm(x, self.weight, self.eps, silu_input)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}" + ("" if self.elementwise_affine else ", elementwise_affine=False")
