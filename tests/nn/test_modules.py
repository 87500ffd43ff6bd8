"""RMSNorm, SwiGLU and ShortConvolution against plain-PyTorch definitions (float64, so tolerances are ~1e-12)."""

import pytest
import torch
import torch.nn.functional as F

from gsa.nn import RMSNorm, ShortConvolution, SwiGLU

TOL = dict(atol=1e-12, rtol=1e-12)  # float64: only summation order differs


def test_rmsnorm_matches_definition_and_keeps_dtype():
    norm = RMSNorm(24, eps=1e-5).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 5, 24, dtype=torch.float64)
    want = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), want, **TOL)
    # bf16 in, bf16 out, statistics in float32: equal to the float32 computation rounded once.
    xb = x.to(torch.bfloat16)
    norm32 = RMSNorm(24, eps=1e-5)
    norm32.weight.data.copy_(norm.weight.data)
    yb = norm32(xb)
    assert yb.dtype == torch.bfloat16
    torch.testing.assert_close(yb, norm32(xb.float()).to(torch.bfloat16), atol=0, rtol=0)


@pytest.mark.parametrize("silu_input", [False, True])
def test_rmsnorm_gradients_match_autograd_of_the_definition(silu_input):
    """The one-node RMSNorm (saves x and rstd, recomputes in backward) against autograd through the formula."""
    norm = RMSNorm(24, eps=1e-5).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 5, 24, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(3, 5, 24, dtype=torch.float64)

    def definition(x, w):
        xin = F.silu(x) if silu_input else x
        return xin / torch.sqrt(xin.pow(2).mean(-1, keepdim=True) + 1e-5) * w

    w = norm.weight.detach().clone().requires_grad_(True)
    want = definition(x, w)
    gx, gw = torch.autograd.grad(want, (x, w), dy)
    got = norm(x, silu_input=silu_input)
    hx, hw = torch.autograd.grad(got, (x, norm.weight), dy)
    torch.testing.assert_close(got, want, **TOL)
    torch.testing.assert_close(hx, gx, **TOL)
    torch.testing.assert_close(hw, gw, **TOL)
    assert torch.autograd.gradcheck(lambda x, w: RMSNorm.forward(norm, x, silu_input), (x, norm.weight))


def test_rmsnorm_saves_only_its_input_and_rstd():
    """What autograd keeps for the backward of a bf16 [N, D] input: x itself and float32 rstd [N, 1]."""
    norm = RMSNorm(64)
    x = torch.randn(8, 64, dtype=torch.bfloat16, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        norm(x, silu_input=True)
    shapes = sorted((tuple(t.shape), t.dtype) for t in saved if t.numel() > 1)
    assert shapes == [((8, 1), torch.float32), ((8, 64), torch.bfloat16), ((64,), torch.float32)], shapes


def test_rmsnorm_eps_is_used():
    x = torch.full((1, 4), 1e-3)
    assert not torch.allclose(RMSNorm(4, eps=1e-6)(x), RMSNorm(4, eps=1e-2)(x))


@pytest.mark.parametrize("act", ["silu", "gelu", "relu"])
def test_swiglu_matches_definition(act):
    mlp = SwiGLU(16, 40, act).double()
    x = torch.randn(2, 3, 16, dtype=torch.float64)
    fn = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu}[act]
    want = (fn(x @ mlp.gate_proj.weight.T) * (x @ mlp.up_proj.weight.T)) @ mlp.down_proj.weight.T
    torch.testing.assert_close(mlp(x), want, **TOL)


def _mlp_definition(mlp, x, act="silu"):
    """The block through plain autograd, the product kept: gate, up, product and weights as leaves of one graph."""
    fn = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu}[act]
    return F.linear(fn(mlp.gate_proj(x)) * mlp.up_proj(x), mlp.down_proj.weight)


@pytest.mark.parametrize("act", ["silu", "gelu", "relu"])
def test_swiglu_gradients_with_the_product_recomputed(act):
    """Training (grad on) goes through GatedDown: output and every gradient equal autograd of the definition, and
    gradcheck passes through the recomputed backward."""
    mlp = SwiGLU(16, 40, act).double()
    x = torch.randn(2, 3, 16, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(2, 3, 16, dtype=torch.float64)
    params = [x, mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight]
    want = torch.autograd.grad(_mlp_definition(mlp, x, act), params, dy)
    out = mlp(x)
    assert out.grad_fn.name() == "GatedDownBackward"
    got = torch.autograd.grad(out, params, dy)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOL)
    assert torch.autograd.gradcheck(lambda x: mlp(x), (x,))


def test_swiglu_recompute_under_autocast_equals_the_plain_path():
    """bf16 autocast over float32 weights (the training setup): the same casts and products as autograd through
    the down projection, so bitwise the same output and gradients (the weight gradient float32, as the weight)."""
    torch.manual_seed(0)
    mlp = SwiGLU(32, 64)
    x = torch.randn(4, 32, requires_grad=True)
    dy = torch.randn(4, 32, dtype=torch.bfloat16)
    params = [x, *mlp.parameters()]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want_out = _mlp_definition(mlp, x)
        out = mlp(x)
    assert out.dtype == want_out.dtype == torch.bfloat16
    torch.testing.assert_close(out, want_out, rtol=0, atol=0)
    want = torch.autograd.grad(want_out, params, dy)
    got = torch.autograd.grad(out, params, dy)
    assert [g.dtype for g in got] == [torch.float32] * 4
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_swiglu_keeps_gate_and_up_but_not_their_product():
    """What a training forward of a bf16 [N, hidden] input keeps for the backward: x (for gate and up's weight
    gradients), gate, up and the weights; the [N, F] product the plain path keeps for the down projection is gone."""
    mlp = SwiGLU(16, 40).to(torch.bfloat16)
    x = torch.randn(8, 16, dtype=torch.bfloat16, requires_grad=True)

    def saved_by(fn):
        saved = {}
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.setdefault(t.data_ptr(), t), lambda t: t):
            fn()
        return sorted(tuple(t.shape) for t in saved.values())

    ours = saved_by(lambda: mlp(x))
    plain = saved_by(lambda: _mlp_definition(mlp, x))
    assert ours == [(8, 16), (8, 40), (8, 40), (16, 40), (16, 40), (16, 40)], ours  # x, gate, up, three weights
    # through autograd the product (and, on PyTorch's element-wise ops, silu(gate) too) is kept besides gate and up
    assert plain.count((8, 40)) >= ours.count((8, 40)) + 1, plain


def test_swiglu_wrapped_down_projection_keeps_its_own_forward():
    """A down projection that is not a plain nn.Linear (peft's LoRA wraps it) runs its own forward, not its weight."""

    class Doubled(torch.nn.Linear):
        def forward(self, z):
            return 2 * super().forward(z)

    mlp = SwiGLU(16, 40).double()
    x = torch.randn(3, 16, dtype=torch.float64, requires_grad=True)
    want = 2 * _mlp_definition(mlp, x)
    doubled = Doubled(40, 16, bias=False).double()
    doubled.weight = mlp.down_proj.weight
    mlp.down_proj = doubled
    torch.testing.assert_close(mlp(x), want, **TOL)


def test_swiglu_rejects_unknown_activation():
    with pytest.raises(ValueError, match="hidden_act"):
        SwiGLU(8, 16, "tanh")


def _conv_reference(conv: ShortConvolution, x: torch.Tensor) -> torch.Tensor:
    """torch's own depthwise conv1d with W - 1 zeros of left padding, then SiLU. x: [B, T, C]."""
    W = conv.kernel_size
    y = F.conv1d(F.pad(x.transpose(1, 2), (W - 1, 0)), conv.weight[:, None, :], groups=conv.channels)
    return F.silu(y).transpose(1, 2)


def test_short_conv_matches_conv1d():
    conv = ShortConvolution(6, 4).double()
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    y, state = conv(x, output_state=True)
    torch.testing.assert_close(y, _conv_reference(conv, x), **TOL)
    torch.testing.assert_close(state, x[:, -3:], **TOL)


@pytest.mark.parametrize("splits", [[1] * 7, [2, 1, 4], [5, 2]])
def test_short_conv_state_chaining(splits):
    """Feeding pieces one after another with the carried state equals one call on the whole sequence."""
    conv = ShortConvolution(5, 4).double()
    x = torch.randn(2, sum(splits), 5, dtype=torch.float64)
    full, _ = conv(x)
    state, outs, t = None, [], 0
    for n in splits:
        y, state = conv(x[:, t : t + n], state=state, output_state=True)
        outs.append(y)
        t += n
    torch.testing.assert_close(torch.cat(outs, 1), full, **TOL)


def test_short_conv_packed_sequences_do_not_leak():
    conv = ShortConvolution(3, 4).double()
    lens = [5, 1, 2, 6]
    xs = [torch.randn(1, n, 3, dtype=torch.float64) for n in lens]
    cu = torch.tensor([0, 5, 6, 8, 14])
    packed, _ = conv(torch.cat(xs, 1), cu_seqlens=cu)
    alone = torch.cat([conv(x)[0] for x in xs], 1)
    torch.testing.assert_close(packed, alone, **TOL)


def test_short_conv_left_padding_is_invisible():
    conv = ShortConvolution(4, 3).double()
    x = torch.randn(1, 6, 4, dtype=torch.float64)
    padded = torch.cat([torch.randn(1, 3, 4, dtype=torch.float64), x], 1)  # garbage in the padding
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    y, state = conv(padded, mask=mask, output_state=True)
    want, want_state = conv(x, output_state=True)
    torch.testing.assert_close(y[:, 3:], want, **TOL)
    torch.testing.assert_close(state, want_state, **TOL)


def test_short_conv_errors():
    conv = ShortConvolution(4, 4)
    x = torch.randn(1, 5, 4)
    with pytest.raises(ValueError, match="cu_seqlens"):
        conv(x, cu_seqlens=torch.tensor([0, 5]), state=torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match="conv state"):
        conv(x, state=torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match=r"expects x \[B, T, 4\], got shape \(1, 5, 3\)"):
        conv(torch.randn(1, 5, 3))


def test_short_conv_inplace_state_overwrites_the_given_buffer():
    conv = ShortConvolution(5, 4).double()
    x = torch.randn(2, 8, 5, dtype=torch.float64)
    full, _ = conv(x)
    _, state = conv(x[:, :3], output_state=True)
    buffer = state
    outs = []
    for t in range(3, 8):
        y, state = conv(x[:, t : t + 1], state=state, output_state=True, inplace_state=True)
        assert state is buffer
        outs.append(y)
    torch.testing.assert_close(torch.cat(outs, 1), full[:, 3:], **TOL)
    with pytest.raises(ValueError, match="inplace_state"):
        conv(x, inplace_state=True)


def test_short_conv_packed_states_equal_each_sequence_alone():
    conv = ShortConvolution(5, 4).double()
    lengths = [1, 2, 7]
    x = torch.randn(1, sum(lengths), 5, dtype=torch.float64)
    cu = torch.tensor([0, 1, 3, 10])
    _, packed = conv(x, cu_seqlens=cu, output_state=True)
    assert packed.shape == (3, 3, 5)
    for n in range(3):
        _, alone = conv(x[:, cu[n] : cu[n + 1]], output_state=True)
        torch.testing.assert_close(packed[n : n + 1], alone, rtol=0, atol=0)


def test_swiglu_training_compiles_in_one_graph():
    """The recomputing backward has no autograd call inside, so torch.compile traces the block whole (fullgraph)
    and its gradients equal eager ones."""
    torch.manual_seed(0)
    mlp = SwiGLU(16, 40)
    x = torch.randn(4, 16, requires_grad=True)
    compiled = torch.compile(mlp, backend="aot_eager", fullgraph=True)
    got = torch.autograd.grad(compiled(x).sum(), (x, *mlp.parameters()))
    want = torch.autograd.grad(mlp(x).sum(), (x, *mlp.parameters()))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)
