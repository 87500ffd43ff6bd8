"""The GSA layer: its formula, grouped heads, short convolution, padding, packing and state chaining.

Equivalence tests run in float64, where the layer's paths differ only in summation order (~1e-15 relative);
1e-10 is far above that and far below any semantic error (which shows up at ~1e-2).
"""

import pytest
import torch
import torch.nn.functional as F

from gsa.nn import GatedSlotAttention, GSAState
from gsa.nn.options import LayerOptions
from gsa.ops import parallel_reference

TOL = dict(atol=1e-10, rtol=1e-10)


def make_layer(**kw) -> GatedSlotAttention:
    args = dict(hidden_size=32, num_heads=4, num_kv_heads=2, num_slots=6, gate_logit_normalizer=4.0)
    args.update(kw)
    layer = GatedSlotAttention(**args).double()
    if layer.use_short_conv:  # make the convolution far from identity-like so that leaks would show
        for conv in (layer.q_conv, layer.k_conv, layer.v_conv):
            torch.nn.init.normal_(conv.weight, std=0.5)
    return layer


@pytest.mark.parametrize("scale", [None, 1.0])
def test_layer_matches_the_spec_formula(scale):
    """y = W_o RMSNorm(swish(o)), o = GSA(swish(q), swish(k), swish(v), 1 - exp(g), g), g = logsigmoid(f) / tau."""
    layer = make_layer(scale=scale, expand_k=0.5, expand_v=1.5)
    B, T, HQ, H, K, V, M = 2, 7, 4, 2, 4, 12, 6
    x = torch.randn(B, T, 32, dtype=torch.float64)
    q = F.silu(x @ layer.q_proj.weight.T).view(B, T, HQ, K)
    k = F.silu(x @ layer.k_proj.weight.T).view(B, T, H, K)
    v = F.silu(x @ layer.v_proj.weight.T).view(B, T, H, V)
    g = F.logsigmoid(x @ layer.f_proj.weight.T).view(B, T, H, M) / 4.0
    o, _ = parallel_reference(q, k, v, 1 - torch.exp(g), g, scale=K**-0.5 if scale is None else scale)
    o = F.silu(o.reshape(B, T, HQ * V))
    o = o / torch.sqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * layer.o_norm.weight
    want = o @ layer.o_proj.weight.T
    y, state = layer(x)
    assert state is None
    torch.testing.assert_close(y, want, **TOL)


def test_grouped_heads_equal_repeated_kv_heads():
    """Two kv heads shared by four query heads == four kv heads whose k/v/f weights repeat per group."""
    grouped = make_layer(num_kv_heads=2)
    full = make_layer(num_kv_heads=4)
    K, V, M = grouped.head_k_dim, grouped.head_v_dim, grouped.num_slots
    with torch.no_grad():
        full.q_proj.weight.copy_(grouped.q_proj.weight)
        full.o_proj.weight.copy_(grouped.o_proj.weight)
        for name, width in (("k_proj", K), ("v_proj", V), ("f_proj", M)):
            w = getattr(grouped, name).weight.view(2, width, -1)  # kv head h serves query heads 2h, 2h + 1
            getattr(full, name).weight.copy_(w.repeat_interleave(2, dim=0).reshape(4 * width, -1))
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    torch.testing.assert_close(grouped(x)[0], full(x)[0], **TOL)
    assert grouped.k_proj.weight.shape == (2 * K, 32) and grouped.q_proj.weight.shape == (4 * K, 32)


def test_short_conv_adds_parameters_and_changes_output():
    torch.manual_seed(1)
    plain = make_layer()
    torch.manual_seed(1)
    conv = make_layer(use_short_conv=True)
    n_plain = sum(p.numel() for p in plain.parameters())
    n_conv = sum(p.numel() for p in conv.parameters())
    assert n_conv - n_plain == 4 * (4 * 8 + 2 * 8 + 2 * 8)  # kernel 4 on q (HQ*K), k (H*K), v (H*V)
    x = torch.randn(1, 5, 32, dtype=torch.float64)
    assert not torch.allclose(plain(x)[0], conv(x)[0])


@pytest.mark.parametrize("use_short_conv", [False, True])
def test_left_padding_equals_sequence_alone(use_short_conv):
    layer = make_layer(use_short_conv=use_short_conv)
    lens = [7, 3, 5]
    xs = [torch.randn(1, n, 32, dtype=torch.float64) for n in lens]
    T = max(lens)
    batch = torch.randn(len(lens), T, 32, dtype=torch.float64)  # garbage where padded
    mask = torch.zeros(len(lens), T, dtype=torch.long)
    for i, (x, n) in enumerate(zip(xs, lens)):
        batch[i, T - n :] = x[0]
        mask[i, T - n :] = 1
    y, state = layer(batch, attention_mask=mask, output_state=True)
    for i, (x, n) in enumerate(zip(xs, lens)):
        want, want_state = layer(x, output_state=True)
        torch.testing.assert_close(y[i : i + 1, T - n :], want, **TOL)
        torch.testing.assert_close(state.hk[i : i + 1], want_state.hk, **TOL)
        torch.testing.assert_close(state.hv[i : i + 1], want_state.hv, **TOL)
        if use_short_conv:
            for c, wc in zip(state.conv, want_state.conv):
                torch.testing.assert_close(c[i : i + 1], wc, **TOL)


@pytest.mark.parametrize("use_short_conv", [False, True])
def test_packed_equals_sequences_alone(use_short_conv):
    layer = make_layer(use_short_conv=use_short_conv)
    lens = [6, 1, 3, 9]
    xs = [torch.randn(1, n, 32, dtype=torch.float64) for n in lens]
    cu = torch.tensor([0, 6, 7, 10, 19])
    packed, _ = layer(torch.cat(xs, 1), cu_seqlens=cu)
    alone = torch.cat([layer(x)[0] for x in xs], 1)
    torch.testing.assert_close(packed, alone, **TOL)


@pytest.mark.parametrize("use_short_conv", [False, True])
@pytest.mark.parametrize("prefill", [6, 67])  # 67: the chunked op path with more than one 64-step chunk
def test_state_chaining_equals_one_call(use_short_conv, prefill):
    """Prefill, then single steps and a short chunk, each from the previous state == one call on everything."""
    layer = make_layer(use_short_conv=use_short_conv)
    x = torch.randn(2, prefill + 6, 32, dtype=torch.float64)
    full, _ = layer(x)
    y0, state = layer(x[:, :prefill], output_state=True)
    hk_before = state.hk.clone()
    y1, state1 = layer(x[:, prefill : prefill + 1], state=state, output_state=True)
    torch.testing.assert_close(state.hk, hk_before, atol=0, rtol=0)  # the given state is never modified
    y2, state2 = layer(x[:, prefill + 1 : prefill + 3], state=state1, output_state=True)
    y3, _ = layer(x[:, prefill + 3 :], state=state2, output_state=True)
    torch.testing.assert_close(torch.cat([y0, y1, y2, y3], 1), full, **TOL)


def test_from_options_builds_the_keyword_layer():
    """One object (a config's layer_options()) and the keyword arguments build the same layer."""
    kw = dict(num_heads=4, num_kv_heads=2, num_slots=6, use_short_conv=True, gate_bias=True, window_size=4,
              scale=0.5, norm_eps=1e-3)
    torch.manual_seed(0)
    a = GatedSlotAttention.from_options(LayerOptions(32, **kw))
    torch.manual_seed(0)
    b = GatedSlotAttention(32, **kw)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert (a.scale, a.o_norm.eps, a.window_size) == (b.scale, b.o_norm.eps, b.window_size) == (0.5, 1e-3, 4)


def test_layer_rejects_bad_options():
    with pytest.raises(TypeError):
        GatedSlotAttention(32, num_heads=4, output_gate=True)  # no **kwargs sink
    with pytest.raises(ValueError, match="num_kv_heads"):
        GatedSlotAttention(32, num_heads=4, num_kv_heads=3)
    with pytest.raises(ValueError, match="expand_k"):
        GatedSlotAttention(32, num_heads=4, expand_k=0.3)
    with pytest.raises(ValueError, match="gate_logit_normalizer"):
        GatedSlotAttention(32, gate_logit_normalizer=0)
    with pytest.raises(ValueError, match="gate_bias"):
        GatedSlotAttention(32, gate_bias=True, forget_gate="none")
    with pytest.raises(ValueError, match="gate_bias"):
        GatedSlotAttention(32, gate_bias="yes")
    with pytest.raises(ValueError, match="gate_bias_range"):
        GatedSlotAttention(32, gate_bias=True, gate_bias_range=(2, -2))
    with pytest.raises(ValueError, match="gate_bias_range.*needs gate_bias=True"):
        GatedSlotAttention(32, gate_bias_range=(4, 4))
    layer = make_layer()
    x = torch.randn(1, 4, 32, dtype=torch.float64)
    with pytest.raises(ValueError, match="cu_seqlens"):
        layer(x, attention_mask=torch.ones(1, 4), cu_seqlens=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="attention_mask"):
        layer(x, attention_mask=torch.ones(1, 3))
    _, state = layer(x, output_state=True)
    with pytest.raises(ValueError, match="state"):
        layer(torch.randn(2, 1, 32, dtype=torch.float64), state=state)


@torch.no_grad()
@pytest.mark.parametrize("feature_map", ["swish", "identity"])
def test_fused_decode_step_from_logits_matches_the_plain_step(feature_map, monkeypatch):
    """With fused projections and owned float32 buffers, a decode step goes through gated_slot_attention_step
    (feature map and gate inside the op) and gives the plain path's output and states."""
    import gsa.nn.decode_step as decode_step

    torch.manual_seed(0)
    layer = GatedSlotAttention(32, num_heads=4, num_kv_heads=2, num_slots=6, gate_logit_normalizer=4.0,
                               feature_map=feature_map)
    x = torch.randn(2, 9, 32)
    _, state = layer(x[:, :6], output_state=True)
    plain = GSAState(state.hk.clone(), state.hv.clone())
    fused = GSAState(state.hk.clone(), state.hv.clone())
    want = [layer(x[:, t:t + 1], state=plain, output_state=True, inplace_state=True)[0] for t in range(6, 9)]
    calls = []
    real = decode_step.gated_slot_attention_step
    monkeypatch.setattr(decode_step, "gated_slot_attention_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    layer.fuse_projections()
    got = [layer(x[:, t:t + 1], state=fused, output_state=True, inplace_state=True)[0] for t in range(6, 9)]
    assert len(calls) == 3
    torch.testing.assert_close(torch.cat(got, 1), torch.cat(want, 1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused.hk, plain.hk, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused.hv, plain.hv, rtol=1e-5, atol=1e-6)
