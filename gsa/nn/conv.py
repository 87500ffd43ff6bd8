"""Short causal depthwise convolution (kernel 4 by default) followed by SiLU, with a decoding state."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gsa.nn.options import check_int


def positions_in_sequence(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """[T] offset of every packed position from the start of its own sequence (cu_seqlens: [N + 1], c_N = T)."""
    t = torch.arange(total, device=cu_seqlens.device)
    seq = torch.searchsorted(cu_seqlens[1:].to(t.dtype), t, right=True)
    return t - cu_seqlens.to(t.dtype)[seq]


def _last_inputs_per_sequence(x: torch.Tensor, cu_seqlens: torch.Tensor, n: int) -> torch.Tensor:
    """x: [T, C] packed inputs -> [N, n, C]: each sequence's last n inputs, zero where it has fewer than n."""
    cu = cu_seqlens.to(device=x.device, dtype=torch.long)
    idx = cu[1:, None] - n + torch.arange(n, device=x.device)  # [N, n] positions, oldest first
    valid = idx >= cu[:-1, None]
    return x[idx.clamp(min=0)] * valid[..., None].to(x.dtype)


class ShortConvolution(nn.Module):
    """y_t = silu( sum_{i < W} w[:, i] * x_{t - (W - 1) + i} + b ), per channel (depthwise), causal; b only with
    `bias=True` (fla's `conv_bias`; starts at zero), else no bias.

    Shapes: x [B, T, C] -> y [B, T, C]; the decoding state is the last W - 1 inputs, [B, W - 1, C].

    - `mask` [B, T] (1 = token, 0 = padding): padded inputs are zeroed before the convolution, so with left padding
      a sequence's first real token sees zeros, exactly as it would with no padding at all.
    - `cu_seqlens` [N + 1] (B == 1): taps that would reach back across a sequence boundary are dropped, so packed
      sequences never see each other.
    - `state` [B, W - 1, C]: the inputs preceding x (from a previous call); zeros when None.

    Taps are initialised like `torch.nn.Conv1d` (U(-1/sqrt(W), 1/sqrt(W))): a normal(0, 0.02) init, as used for the
    linear layers, would shrink q, k and v by ~0.04 at initialisation.
    """

    def __init__(self, channels: int, kernel_size: int = 4, bias: bool = False):
        super().__init__()
        self.channels = check_int("ShortConvolution channels", channels)
        self.kernel_size = check_int("ShortConvolution kernel_size", kernel_size, minimum=2)
        if not isinstance(bias, bool):
            raise ValueError(f"ShortConvolution bias must be a bool, got {bias!r}")
        self.weight = nn.Parameter(torch.empty(channels, kernel_size))
        self.bias = nn.Parameter(torch.empty(channels)) if bias else None
        self.reset_parameters()

    @property
    def init_bound(self) -> float:
        return 1.0 / math.sqrt(self.kernel_size)

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.weight, -self.init_bound, self.init_bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
        output_state: bool = False,
        inplace_state: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: [B, T, C]; mask: [B, T]; cu_seqlens: [N + 1]; state: [B, W - 1, C].

        Returns y [B, T, C] and, when `output_state`, the new state [B, W - 1, C] (else None): a new tensor, or with
        `inplace_state` the given `state` buffer, overwritten (decoding with owned buffers; `state` is not
        modified otherwise).
        """
        if x.ndim != 3 or x.shape[-1] != self.channels:
            raise ValueError(f"ShortConvolution expects x [B, T, {self.channels}], got shape {tuple(x.shape)}")
        B, T, C = x.shape
        W = self.kernel_size
        if inplace_state and (state is None or not output_state):
            raise ValueError("ShortConvolution: inplace_state needs a state buffer and output_state=True")
        if cu_seqlens is not None and (state is not None or inplace_state):
            raise ValueError("ShortConvolution: packed sequences (cu_seqlens) start from zeros: no input state")
        if mask is not None:
            if tuple(mask.shape) != (B, T):
                raise ValueError(f"mask must have shape [B, T] = {(B, T)}, got {tuple(mask.shape)}")
            x = x * mask[..., None].to(x.dtype)
        if state is None:
            prev = x.new_zeros(B, W - 1, C)
        elif tuple(state.shape) != (B, W - 1, C):
            raise ValueError(f"conv state must have shape [B, W - 1, C] = {(B, W - 1, C)}, got {tuple(state.shape)}")
        else:
            prev = state.to(x.dtype)
        xp = torch.cat([prev, x], dim=1)  # [B, W - 1 + T, C]

        # Accumulate in at least float32: four bf16 products summed in bf16 lose ~2 bits.
        acc = torch.promote_types(x.dtype, torch.float32)
        w = self.weight.to(acc)
        pos = positions_in_sequence(cu_seqlens, T) if cu_seqlens is not None else None
        y = torch.zeros(B, T, C, dtype=acc, device=x.device) if self.bias is None else self.bias.to(acc).expand(B, T, C)
        for i in range(W):
            tap = xp[:, i : i + T].to(acc) * w[:, i]
            back = W - 1 - i  # how many steps into the past this tap reads
            if pos is not None and back > 0:
                tap = tap * (pos >= back).to(acc)[None, :, None]
            y = y + tap
        y = F.silu(y).to(x.dtype)
        if not output_state:
            return y, None
        if cu_seqlens is not None:  # one state per packed sequence: its last W - 1 inputs, zeros before its start
            return y, _last_inputs_per_sequence(x[0], cu_seqlens, W - 1)
        if inplace_state:  # xp is a fresh tensor, so copying its tail into `state` reads nothing it overwrites
            return y, state.copy_(xp[:, T:])
        return y, xp[:, T:].clone()  # the last W - 1 inputs

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}" + (", bias=True" if self.bias is not None else "")
