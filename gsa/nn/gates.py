"""The forget gate's options: the ablations (FORGET_GATES) and W_f's bias spread over the slots (gate_bias)."""

from __future__ import annotations

import numbers

import torch
from torch import nn

from gsa.errors import OptionError

FORGET_GATES = ("data", "fixed", "none")

SPREAD = (-4.0, 4.0)  # the default range of spread_slot_logits


def spread_slot_logits(heads: int, slots: int, span: tuple[float, float] = SPREAD) -> torch.Tensor:
    """[heads, slots]: gate logits linspace(*span) over each head's slots, so the slots start at different decays
    (alpha = sigmoid(logit) ** (1 / tau)): the "fixed" gate's init and gate_bias's W_f bias. A span (b, b) gives
    every slot the same logit b."""
    return torch.linspace(float(span[0]), float(span[1]), slots).repeat(heads, 1)


def check_gate_bias_range(span, gate_bias: bool = True) -> tuple[float, float]:
    """(lo, hi) as floats, or an OptionError naming gate_bias_range. A range other than the default needs gate_bias
    (without the bias it spreads it would be ignored silently)."""
    ok = isinstance(span, (list, tuple)) and len(span) == 2 and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and abs(v) < float("inf") for v in span)
    if not ok or span[0] > span[1]:
        raise OptionError("gate_bias_range", f" must be two finite numbers (lo, hi) with lo <= hi, got {span!r}")
    span = float(span[0]), float(span[1])
    if span != SPREAD and not gate_bias:
        raise OptionError("gate_bias_range", f"={list(span)} needs gate_bias=True (it sets W_f's bias)")
    return span


class SlotGateProjection(nn.Linear):
    """W_f with a bias spread over each head's slots (the layer's gate_bias=True): b = linspace(lo, hi, M) per head,
    by default (-4, 4), so at init (W_f x ~ 0) the slots keep sigmoid(b) ** (1 / tau) of themselves a token:
    0.61 ... 0.998 at tau 8, memories of ~2 to ~440 tokens, instead of 0.917 (~12 tokens) for every slot. The same
    spread as the "fixed" gate, with the data-dependent part kept. span (b, b): every slot starts at logit b (b = 4:
    memories of ~440 tokens). `spread_bias()` is the init (the model's _init_weights copies it in)."""

    def __init__(self, in_features: int, heads: int, slots: int, span: tuple[float, float] = SPREAD):
        super().__init__(in_features, heads * slots, bias=True)
        self.slots, self.span = slots, check_gate_bias_range(span)
        with torch.no_grad():
            self.bias.copy_(self.spread_bias())

    def spread_bias(self) -> torch.Tensor:
        """[heads * slots]: spread_slot_logits over the span, flattened."""
        return spread_slot_logits(self.out_features // self.slots, self.slots, self.span).flatten()
