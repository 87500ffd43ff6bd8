"""A GSA layer's recurrent state."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gsa.nn.window import WindowState


@dataclass
class GSAState:
    """One layer's recurrent state for B sequences.

    hk: [B, H, K, M] and hv: [B, H, M, V], the two slot memories (float32; float64 for a float64 model).
    conv: the last W - 1 inputs of the q, k and v short convolutions, each [B, W - 1, C], or None when the layer
        has no short convolution.
    window: the sliding-window keys, values, positions and token counts of a hybrid layer (window_size > 0; layout
        in gsa.nn.window), or None.
    """

    hk: torch.Tensor
    hv: torch.Tensor
    conv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    window: WindowState | None = None

    @property
    def batch_size(self) -> int:
        return self.hk.shape[0]

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor of the state, in a fixed order (all have the batch first)."""
        return [self.hk, self.hv, *(self.conv or ()), *(self.window or ())]

    def map(self, fn) -> GSAState:
        """A new state with `fn` applied to every tensor."""
        conv = None if self.conv is None else tuple(fn(c) for c in self.conv)
        window = None if self.window is None else tuple(fn(w) for w in self.window)
        return GSAState(fn(self.hk), fn(self.hv), conv, window)
