"""The layer's ablations: data-independent decay ("fixed"), ABC ("none"), and no softmax (slot_read="linear")."""

import pytest
import torch
import torch.nn.functional as F

from gsa.nn import GatedSlotAttention
from gsa.ops import parallel_reference


def layer(forget_gate, **kw):
    torch.manual_seed(0)
    return GatedSlotAttention(24, num_heads=4, num_kv_heads=2, num_slots=6, forget_gate=forget_gate, **kw).double()


def _qkv(m, x):
    B, T, _ = x.shape
    q = F.silu(m.q_proj(x)).view(B, T, 4, -1)
    k = F.silu(m.k_proj(x)).view(B, T, 2, -1)
    v = F.silu(m.v_proj(x)).view(B, T, 2, -1)
    return q, k, v


def _out(m, o):
    return m.o_proj(m.o_norm(F.silu(o.flatten(2))))


def test_fixed_decay_is_the_same_for_every_token_and_learned():
    m = layer("fixed")
    assert not hasattr(m, "f_proj") and m.f_logit.shape == (2, 6)
    x = torch.randn(2, 70, 24, dtype=torch.float64)
    q, k, v = _qkv(m, x)
    g = (F.logsigmoid(m.f_logit) / m.gate_logit_normalizer).expand(2, 70, 2, 6)
    ref = _out(m, parallel_reference(q, k, v, -torch.expm1(g), g, scale=m.scale)[0])
    y, _ = m(x)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    y.sum().backward()
    assert m.f_logit.grad is not None and m.f_logit.grad.abs().sum() > 0


def test_fixed_decay_padding_and_decoding():
    m = layer("fixed")
    x = torch.randn(1, 20, 24, dtype=torch.float64)
    full, _ = m(x)
    padded = torch.cat([torch.zeros(1, 5, 24, dtype=torch.float64), x], 1)
    mask = torch.cat([torch.zeros(1, 5), torch.ones(1, 20)], 1)
    y_pad, _ = m(padded, attention_mask=mask)
    torch.testing.assert_close(y_pad[:, 5:], full, rtol=1e-10, atol=1e-10)
    y1, st = m(x[:, :12], output_state=True)
    y2, _ = m(x[:, 12:], state=st, output_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), full, rtol=1e-10, atol=1e-10)


def test_abc_uses_slot_logits_with_a_cumulative_softmax():
    m = layer("none")
    x = torch.randn(2, 40, 24, dtype=torch.float64)
    q, k, v = _qkv(m, x)
    logits = m.f_proj(x).view(2, 40, 2, 6)
    ref = _out(m, parallel_reference(q, k, v, logits, None, scale=m.scale)[0])
    y, _ = m(x, attention_mask=torch.ones(2, 40))
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)


def test_abc_packed_equals_each_sequence_alone():
    m = layer("none")
    a, b = torch.randn(1, 9, 24, dtype=torch.float64), torch.randn(1, 70, 24, dtype=torch.float64)
    y, _ = m(torch.cat([a, b], 1), cu_seqlens=torch.tensor([0, 9, 79]))
    torch.testing.assert_close(y, torch.cat([m(a)[0], m(b)[0]], 1), rtol=1e-10, atol=1e-10)


def test_abc_refuses_states_and_padding():
    m = layer("none")
    x = torch.randn(1, 6, 24, dtype=torch.float64)
    with pytest.raises(ValueError, match="full sequences only"):
        m(x, output_state=True)
    mask = torch.ones(1, 6)
    mask[0, 0] = 0
    with pytest.raises(ValueError, match="does not support padding"):
        m(x, attention_mask=mask)


def test_unknown_forget_gate_raises():
    with pytest.raises(ValueError, match="forget_gate must be one of"):
        GatedSlotAttention(24, forget_gate="abc")


def test_linear_slot_read_layer():
    m = layer("data", slot_read="linear")
    x = torch.randn(2, 30, 24, dtype=torch.float64)
    q, k, v = _qkv(m, x)
    g = F.logsigmoid(m.f_proj(x).view(2, 30, 2, 6)) / m.gate_logit_normalizer
    ref = _out(m, parallel_reference(q, k, v, -torch.expm1(g), g, scale=m.scale, slot_read="linear")[0])
    torch.testing.assert_close(m(x)[0], ref, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="slot_read must be one of"):
        GatedSlotAttention(24, slot_read="relu")
