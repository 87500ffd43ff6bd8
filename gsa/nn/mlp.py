"""The gated feed-forward block of each decoder layer."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gsa.nn.backend import use_triton_kernels
from gsa.ops.device import on_device_of
from gsa.nn.fused import FusesProjections, use_fused

# The gate's nonlinearity. "silu" gives SwiGLU (the GSA paper and Llama); the others give GeGLU / ReGLU.
ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu}


class SwiGLU(FusesProjections):
    """y = W_down( act(W_gate x) * (W_up x) ), no biases.

    x: [..., hidden_size] -> [..., hidden_size]; the hidden width is `intermediate_size`.
    """

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str = "silu"):
        super().__init__()
        if hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act must be one of {sorted(ACTIVATIONS)}, got {hidden_act!r}")
        self.hidden_act = hidden_act
        self.hidden_size = hidden_size
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def fuse_projections(self) -> None:
        """Compute gate and up as one matrix product when autograd is off (see gsa.nn.fused)."""
        self._fuse("gate_up", self.gate_proj, self.up_proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., hidden_size] -> [..., hidden_size]."""
        if x.shape[-1] != self.hidden_size:
            raise ValueError(f"SwiGLU expects x [..., {self.hidden_size}], got shape {tuple(x.shape)}")
        if use_fused(self._fused, x):
            gate, up = self._fused.product(x).split(self._fused.sizes, dim=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        # a plain nn.Linear only: a wrapped projection (peft's LoRA) has more than its weight to apply
        if torch.is_grad_enabled() and type(self.down_proj) is nn.Linear:
            return GatedDown.apply(gate, up, self.down_proj.weight, self.hidden_act)
        return self.down_proj(gated_product(gate, up, self.hidden_act))


class GatedDown(torch.autograd.Function):
    """down(act(gate) * up) = (act(gate) * up) @ W^T for training, keeping gate, up and W for the backward but not
    their product, which the backward recomputes (one element-wise pass). Through autograd the product is kept for
    the down projection's weight gradient: one more [N, F] a layer (GSA-1.3B, F = 5632, 16K tokens: 185 MB a
    layer in bf16, 4.4 GB over 24 layers). Same arithmetic as the plain path, under autocast too.

    gate, up: [..., F]; weight: [hidden, F] -> [..., hidden]."""

    @staticmethod
    def forward(ctx, gate, up, weight, hidden_act):
        device = gate.device.type
        ctx.autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        ctx.hidden_act = hidden_act
        ctx.save_for_backward(gate, up, weight)
        return F.linear(gated_product(gate, up, hidden_act), weight)

    @staticmethod
    def backward(ctx, dy):
        gate, up, weight = ctx.saved_tensors
        device, enabled, dtype = ctx.autocast
        with torch.autocast(device, dtype=dtype, enabled=enabled):  # the products as the forward's
            dz = torch.matmul(dy, weight).to(gate.dtype)  # [..., F]
            z, dg, du = gated_product_backward(gate, up, dz, ctx.hidden_act)
            dw = None
            if ctx.needs_input_grad[2]:
                dw = torch.matmul(dy.reshape(-1, dy.shape[-1]).t(), z.reshape(-1, z.shape[-1])).to(weight.dtype)
        return dg, du, dw, None


def _silu_grad(g):
    sig = torch.sigmoid(g)
    return sig * (1 + g * (1 - sig))


def _gelu_grad(g):  # the exact (erf) GELU, F.gelu's default
    return 0.5 * (1 + torch.erf(g * 0.5**0.5)) + g * torch.exp(-0.5 * g * g) * (2 * math.pi) ** -0.5


def _relu_grad(g):
    return (g > 0).to(g.dtype)


# d act(g) / dg, written out: the backward is traceable by torch.compile (no autograd call inside)
ACTIVATION_GRADS = {"silu": _silu_grad, "gelu": _gelu_grad, "relu": _relu_grad}


def gated_product_backward(gate: torch.Tensor, up: torch.Tensor, dz: torch.Tensor, hidden_act: str = "silu"
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(act(gate) * up, dgate, dup) from the product's gradient dz, all [..., F]: the gated_product recomputed and
    its backward, on SwiGLU's Triton kernels where gated_product runs them."""
    if hidden_act == "silu" and use_triton_kernels(gate):
        from gsa.ops.triton.swiglu import swiglu_bwd, swiglu_fwd

        gate, up = gate.contiguous(), up.contiguous()
        return swiglu_fwd(gate, up), *swiglu_bwd(dz, gate, up)
    # rounded as autograd rounds the plain path: act(gate) and the products in the inputs' dtype, the activation's
    # derivative in at least float32 (as PyTorch's own activation backward computes it)
    wide = torch.promote_types(gate.dtype, torch.float32)
    act = ACTIVATIONS[hidden_act](gate)
    dgate = ((dz * up).to(wide) * ACTIVATION_GRADS[hidden_act](gate.to(wide))).to(gate.dtype)
    return act * up, dgate, dz * act


def gated_product(gate: torch.Tensor, up: torch.Tensor, hidden_act: str = "silu") -> torch.Tensor:
    """act(gate) * up, [..., F] each. SwiGLU's ("silu") runs as one Triton kernel each way where gsa.nn.backend
    says so (gsa.ops.triton.swiglu), PyTorch's element-wise ops otherwise."""
    if hidden_act == "silu" and use_triton_kernels(gate):
        from gsa.ops.triton.swiglu import swiglu_triton

        with on_device_of(gate):  # Triton launches on the current device (gsa.ops.device)
            return swiglu_triton(gate, up)
    return ACTIVATIONS[hidden_act](gate) * up
