"""The layer's keep_states knob reaches the op and changes nothing numerically."""

import torch

import gsa.nn.attention as attention
from gsa.nn import GatedSlotAttention


def test_keep_states_is_passed_to_the_op(monkeypatch):
    seen = []
    real = attention.gated_slot_attention

    def spy(*args, **kw):
        seen.append(kw["keep_states"])
        return real(*args, **kw)

    monkeypatch.setattr(attention, "gated_slot_attention", spy)
    layer = GatedSlotAttention(32, num_heads=2, num_slots=8)
    x = torch.randn(2, 70, 32)
    y0, _ = layer(x)
    layer.keep_states = True
    y1, _ = layer(x)
    assert seen == [None, True]  # None: the op takes gsa.ops.triton.SETTINGS.keep_states
    torch.testing.assert_close(y0, y1)
