"""Hybrid layers (window_size > 0): sliding-window softmax attention with sinks and RoPE, plus the slot memory.

References are written independently of gsa.nn.window: a per-query loop over the allowed keys with an explicit
softmax, and RoPE as complex rotation of dimension pairs (i, i + D/2). float64 throughout; 1e-10 as in
test_attention.py.
"""

import pytest
import torch

from gsa.nn import GatedSlotAttention
from gsa.nn.window import rotary

TOL = dict(atol=1e-10, rtol=1e-10)


def make_layer(window=5, sinks=2, memory=0.7, **kw) -> GatedSlotAttention:
    args = dict(hidden_size=32, num_heads=4, num_kv_heads=2, num_slots=6, gate_logit_normalizer=4.0,
                window_size=window, num_sink_tokens=sinks, rope_theta=100.0)
    args.update(kw)
    layer = GatedSlotAttention(**args).double()
    if window:
        with torch.no_grad():
            layer.memory_scale.copy_(torch.linspace(-memory, memory, layer.num_heads))
    return layer


def rope_reference(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """x [B, T, h, D]: (x_i, x_{i + D/2}) as a complex number times exp(i * pos * theta^(-2i/D))."""
    D = x.shape[-1]
    z = torch.complex(x[..., : D // 2], x[..., D // 2:])
    freq = theta ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    z = z * torch.polar(torch.ones_like(freq), pos[..., None, None].double() * freq)
    return torch.cat((z.real, z.imag), dim=-1)


def window_reference(layer: GatedSlotAttention, x: torch.Tensor) -> torch.Tensor:
    """The window half of one unpadded sequence batch, o [B, T, HQ, V], one query at a time: softmax attention on
    the projections themselves (the feature map shapes the slot read only)."""
    B, T, _ = x.shape
    HQ, H, K, V = layer.num_heads, layer.num_kv_heads, layer.head_k_dim, layer.head_v_dim
    q, k, v = layer.q_proj(x), layer.k_proj(x), layer.v_proj(x)
    pos = torch.arange(T).expand(B, T)
    q = rope_reference(q.view(B, T, HQ, K), pos, layer.rope_theta)
    k = rope_reference(k.view(B, T, H, K), pos, layer.rope_theta)
    v = v.view(B, T, H, V)
    o = torch.zeros(B, T, HQ, V, dtype=x.dtype)
    for i in range(T):
        keys = [j for j in range(i + 1) if i - j < layer.window_size or j < layer.num_sink_tokens]
        for h in range(HQ):
            kv = h // (HQ // H)
            logits = torch.stack([(q[:, i, h] * k[:, j, kv]).sum(-1) for j in keys], -1) * layer.scale  # [B, n]
            p = torch.softmax(logits, -1)
            o[:, i, h] = torch.einsum("bn,bnv->bv", p, v[:, keys, kv])
    return o


def test_rotary_matches_complex_rotation():
    x = torch.randn(2, 7, 3, 8, dtype=torch.float64)
    pos = torch.randint(0, 50, (2, 7))
    torch.testing.assert_close(rotary(x, pos, 500.0), rope_reference(x, pos, 500.0), **TOL)


def test_hybrid_layer_is_window_plus_scaled_slots():
    """y = W_o RMSNorm(swish((1 - memory_scale) * o_window + memory_scale * o_slots)), o_window from the per-query
    reference."""
    layer = make_layer()
    x = torch.randn(2, 13, 32, dtype=torch.float64)
    want_window = window_reference(layer, x)
    plain = make_layer(window=0, sinks=0)
    plain.load_state_dict({k: v for k, v in layer.state_dict().items() if k != "memory_scale"})
    captured = {}
    hook = lambda mod, args, out: captured.setdefault("o", args[0])  # noqa: E731  (o_norm's input)
    handles = [m.o_norm.register_forward_hook(hook) for m in (plain,)]
    plain(x)
    handles[0].remove()
    o_slots = captured["o"].view(2, 13, 4, -1)
    lam = layer.memory_scale[:, None]
    o = (1 - lam) * want_window + lam * o_slots
    want = layer.o_proj(layer.o_norm(o.reshape(2, 13, -1), silu_input=True))
    torch.testing.assert_close(layer(x)[0], want, **TOL)


def test_memory_scale_zero_gives_window_only_and_gradients_reach_it():
    layer = make_layer(memory=0.0)
    x = torch.randn(1, 9, 32, dtype=torch.float64)
    window_only = layer.o_proj(layer.o_norm(window_reference(layer, x).reshape(1, 9, -1), silu_input=True))
    y, _ = layer(x)
    torch.testing.assert_close(y, window_only, **TOL)
    y.square().sum().backward()
    assert layer.memory_scale.grad.abs().min() > 0  # the slots' share learns from step one
    assert layer.q_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("feature_map", ["learned", "swish"])
def test_the_feature_map_shapes_the_slot_read_only(feature_map):
    """The window is the teacher's own softmax attention: learned maps (here far from the identity) change the slot
    read but not the window, so at memory_scale 0 the output does not depend on them; with swish the window reads
    q, k, v before it (window_reference)."""
    layer = make_layer(memory=0.0, feature_map=feature_map)
    x = torch.randn(2, 11, 32, dtype=torch.float64)
    window_only = layer.o_proj(layer.o_norm(window_reference(layer, x).reshape(2, 11, -1), silu_input=True))
    torch.testing.assert_close(layer(x)[0], window_only, **TOL)
    if feature_map == "learned":
        with torch.no_grad():
            for m in (layer.q_map, layer.k_map):
                for w in m.parameters():
                    w.normal_()
        torch.testing.assert_close(layer(x)[0], window_only, **TOL)
        with torch.no_grad():
            layer.memory_scale.fill_(0.5)
        assert (layer(x)[0] - window_only).abs().max() > 1e-3  # the maps still reach the slots


@pytest.mark.parametrize("window,sinks,feature_map", [(3, 0, "swish"), (4, 2, "learned"), (20, 1, "swish")])
def test_prefill_then_steps_equals_full_forward(window, sinks, feature_map):
    """Chained calls (a prefill of 6, then single tokens, then a chunk of 5) == one call, states included; the
    window's ring buffer wraps several times."""
    layer = make_layer(window=window, sinks=sinks, feature_map=feature_map)
    if feature_map == "learned":  # maps off the identity: the window and the slots then read different q and k
        with torch.no_grad():
            for w in (*layer.q_map.parameters(), *layer.k_map.parameters()):
                w.normal_(0, 0.3)
    x = torch.randn(2, 20, 32, dtype=torch.float64)
    full, final = layer(x, output_state=True)
    pieces, state = [], None
    for a, b in ((0, 6), *((t, t + 1) for t in range(6, 15)), (15, 20)):
        y, state = layer(x[:, a:b], state=state, output_state=True)
        pieces.append(y)
    torch.testing.assert_close(torch.cat(pieces, 1), full, **TOL)
    torch.testing.assert_close(state.hk, final.hk, **TOL)
    # the buffers may differ in entries no query can read; what a next token reads must agree
    nxt = torch.randn(2, 3, 32, dtype=torch.float64)
    torch.testing.assert_close(layer(nxt, state=state)[0], layer(nxt, state=final)[0], **TOL)
    torch.testing.assert_close(layer(nxt, state=state)[0], layer(torch.cat((x, nxt), 1))[0][:, 20:], **TOL)


@torch.no_grad()
def test_inplace_decode_matches_and_leaves_inputs_alone():
    """In-place decoding (float32 buffers, no autograd, as StaticDecoder runs it) == returning a new state."""
    layer = make_layer().float()
    x = torch.randn(2, 11, 32)
    _, state = layer(x[:, :8], output_state=True)
    before = [t.clone() for t in state.tensors()]
    y_new, s_new = layer(x[:, 8:9], state=state, output_state=True)
    for a, b in zip(state.tensors(), before):  # not inplace: untouched
        assert torch.equal(a, b)
    y_in, s_in = layer(x[:, 8:9], state=state, output_state=True, inplace_state=True)
    assert s_in is state
    torch.testing.assert_close(y_in, y_new, atol=0, rtol=0)  # the same float32 arithmetic
    nxt = x[:, 9:11]
    torch.testing.assert_close(layer(nxt, state=s_in)[0], layer(nxt, state=s_new)[0], atol=0, rtol=0)


def test_left_padding_and_packing_equal_sequences_alone():
    layer = make_layer(window=4, sinks=1)
    lens = [9, 4, 12]
    xs = [torch.randn(1, n, 32, dtype=torch.float64) for n in lens]
    alone = [layer(x, output_state=True) for x in xs]
    # left padding
    T = max(lens)
    padded = torch.zeros(3, T, 32, dtype=torch.float64)
    mask = torch.zeros(3, T, dtype=torch.long)
    for i, (x, n) in enumerate(zip(xs, lens)):
        padded[i, T - n:], mask[i, T - n:] = x[0], 1
    y, state = layer(padded, attention_mask=mask, output_state=True)
    for i, n in enumerate(lens):
        torch.testing.assert_close(y[i, T - n:], alone[i][0][0], **TOL)
    # packed
    cu = torch.tensor([0, 9, 13, 25])
    yp, sp = layer(torch.cat(xs, 1), cu_seqlens=cu, output_state=True)
    for i in range(3):
        torch.testing.assert_close(yp[0, cu[i]:cu[i + 1]], alone[i][0][0], **TOL)
    # the states continue each sequence as its own state does
    nxt = torch.randn(3, 2, 32, dtype=torch.float64)
    want = torch.cat([layer(nxt[i:i + 1], state=alone[i][1])[0] for i in range(3)])
    torch.testing.assert_close(layer(nxt, state=state)[0], want, **TOL)
    torch.testing.assert_close(layer(nxt, state=sp)[0], want, **TOL)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="num_sink_tokens"):
        GatedSlotAttention(32, num_heads=4, num_sink_tokens=2)
    with pytest.raises(ValueError, match="window_size"):
        GatedSlotAttention(32, num_heads=4, window_size=-1)
    with pytest.raises(ValueError, match="even head_k_dim"):
        GatedSlotAttention(36, num_heads=4, window_size=4)
    layer = make_layer()
    plain = make_layer(window=0, sinks=0)
    _, state = plain(torch.randn(1, 3, 32, dtype=torch.float64), output_state=True)
    with pytest.raises(ValueError, match="state.window"):
        layer(torch.randn(1, 1, 32, dtype=torch.float64), state=state)


@pytest.mark.slow
def test_window_state_gradients_flow_through_keys():
    """Training through a hybrid layer: gradients of every projection are finite and match finite differences."""
    layer = make_layer(window=3, sinks=1)
    x = torch.randn(1, 6, 32, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda t: layer(t)[0], (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("T,window,sinks", [(13, 5, 2), (16, 4, 0), (3, 8, 2), (20, 3, 7), (9, 9, 9), (1, 2, 1)])
def test_banded_path_equals_the_masked_one(T, window, sinks):
    """The O(T W) blocked window (whole rows from position 0) == the masked O(T^2) one, incl. sinks inside the
    first blocks (counted once), more sinks than the window, T shorter than a block, grouped heads."""
    from gsa.nn.window import banded_window_attention, token_positions, window_attention

    torch.manual_seed(T)
    q = torch.randn(2, T, 6, 8, dtype=torch.float64)
    k, v = torch.randn(2, T, 2, 8, dtype=torch.float64), torch.randn(2, T, 2, 5, dtype=torch.float64)
    pos, row = token_positions(torch.ones(2, T, dtype=torch.bool), None, None)
    want = window_attention(q, k, v, pos, row, window, sinks, 0.4)
    torch.testing.assert_close(banded_window_attention(q, k, v, window, sinks, 0.4), want, **TOL)
