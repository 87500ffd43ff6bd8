"""The gated feed-forward block of each decoder layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gsa.nn.backend import use_triton_kernels
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
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def fuse_projections(self) -> None:
        """Compute gate and up as one matrix product when autograd is off (see gsa.nn.fused)."""
        self._fuse("gate_up", self.gate_proj, self.up_proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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
        with torch.enable_grad(), torch.autocast(device, dtype=dtype, enabled=enabled):
            g, u = gate.detach().requires_grad_(), up.detach().requires_grad_()
            z = gated_product(g, u, ctx.hidden_act)
            dz = torch.matmul(dy, weight)  # [..., F], in the forward's compute dtype under autocast
            dw = None
            if ctx.needs_input_grad[2]:
                dw = torch.matmul(dy.reshape(-1, dy.shape[-1]).t(), z.detach().reshape(-1, z.shape[-1]))
                dw = dw.to(weight.dtype)
            dg, du = torch.autograd.grad(z, (g, u), dz.to(z.dtype))
        return dg, du, dw, None


def gated_product(gate: torch.Tensor, up: torch.Tensor, hidden_act: str = "silu") -> torch.Tensor:
    """act(gate) * up, [..., F] each. SwiGLU's ("silu") runs as one Triton kernel each way where gsa.nn.backend
    says so (gsa.ops.triton.swiglu), PyTorch's element-wise ops otherwise."""
    if hidden_act == "silu" and use_triton_kernels(gate):
        from gsa.ops.triton.swiglu import swiglu_triton

        return swiglu_triton(gate, up)
    return ACTIVATIONS[hidden_act](gate) * up
