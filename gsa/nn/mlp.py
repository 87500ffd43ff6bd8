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
        return self.down_proj(gated_product(gate, up, self.hidden_act))


def gated_product(gate: torch.Tensor, up: torch.Tensor, hidden_act: str = "silu") -> torch.Tensor:
    """act(gate) * up, [..., F] each. SwiGLU's ("silu") runs as one Triton kernel each way where gsa.nn.backend
    says so (gsa.ops.triton.swiglu), PyTorch's element-wise ops otherwise."""
    if hidden_act == "silu" and use_triton_kernels(gate):
        from gsa.ops.triton.swiglu import swiglu_triton

        return swiglu_triton(gate, up)
    return ACTIVATIONS[hidden_act](gate) * up
