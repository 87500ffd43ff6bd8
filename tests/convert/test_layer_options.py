"""The layer options conversion needs: feature_map, use_output_norm, qkv_bias (layer, config, save/load)."""

import pytest
import torch
import torch.nn.functional as F

import gsa.models  # noqa: F401  (registers "gsa" with the Auto classes)
from gsa.models import GSAConfig, GSAForCausalLM
from gsa.nn import GatedSlotAttention
from gsa.ops import gated_slot_attention


def _layer(**options) -> GatedSlotAttention:
    torch.manual_seed(0)
    layer = GatedSlotAttention(24, num_heads=4, num_kv_heads=2, num_slots=5, gate_logit_normalizer=4.0, **options)
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return layer.double()


def _expected(layer: GatedSlotAttention, x: torch.Tensor, qkv_map, out_map) -> torch.Tensor:
    """The layer's formula written out: y = W_o out_map(GSA(qkv_map(W_q x), ...))."""
    B, T, _ = x.shape
    q = qkv_map(layer.q_proj(x)).view(B, T, 4, 6)
    k = qkv_map(layer.k_proj(x)).view(B, T, 2, 6)
    v = qkv_map(layer.v_proj(x)).view(B, T, 2, 6)
    g = F.logsigmoid(layer.f_proj(x).view(B, T, 2, 5)) / 4.0
    o, _ = gated_slot_attention(q, k, v, -torch.expm1(g), g, scale=6**-0.5, backend="reference")
    return layer.o_proj(out_map(o.reshape(B, T, 24)))


@pytest.mark.parametrize("feature_map", ["swish", "identity"])
@pytest.mark.parametrize("use_output_norm", [True, False])
@pytest.mark.parametrize("qkv_bias", [False, True])
def test_layer_options_follow_the_formula(feature_map, use_output_norm, qkv_bias):
    layer = _layer(feature_map=feature_map, use_output_norm=use_output_norm, qkv_bias=qkv_bias)
    assert (layer.q_proj.bias is not None) == qkv_bias and (layer.v_proj.bias is not None) == qkv_bias
    assert layer.f_proj.bias is None and layer.o_proj.bias is None
    assert hasattr(layer, "o_norm") == use_output_norm
    x = torch.randn(2, 9, 24, dtype=torch.float64)
    qkv_map = F.silu if feature_map == "swish" else (lambda t: t)
    out_map = (lambda o: layer.o_norm(F.silu(o))) if use_output_norm else (lambda o: o)
    y, _ = layer(x)
    torch.testing.assert_close(y, _expected(layer, x, qkv_map, out_map), rtol=1e-10, atol=1e-12)


def test_identity_layer_chains_its_state():
    layer = _layer(feature_map="identity", use_output_norm=False, qkv_bias=True)
    x = torch.randn(1, 11, 24, dtype=torch.float64)
    full, _ = layer(x)
    first, state = layer(x[:, :4], output_state=True)
    rest, _ = layer(x[:, 4:], state=state)
    torch.testing.assert_close(torch.cat([first, rest], 1), full, rtol=1e-10, atol=1e-12)


def test_layer_option_validation():
    with pytest.raises(ValueError, match="feature_map"):
        GatedSlotAttention(24, feature_map="t2r")
    with pytest.raises(ValueError, match="use_short_conv"):
        GatedSlotAttention(24, feature_map="identity", use_short_conv=True)
    with pytest.raises(ValueError, match="use_output_norm"):
        GatedSlotAttention(24, use_output_norm=0)
    with pytest.raises(ValueError, match="qkv_bias"):
        GatedSlotAttention(24, qkv_bias="yes")
    with pytest.raises(ValueError, match="use_short_conv"):
        GSAConfig(feature_map="identity", use_short_conv=True)


def test_model_options_init_and_round_trip(tmp_path):
    config = GSAConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_heads=4, num_kv_heads=2, num_slots=4,
        intermediate_size=32, feature_map="identity", use_output_norm=False, qkv_bias=True,
    )
    model = GSAForCausalLM(config).eval()
    attn = model.model.layers[0].attn
    assert attn.feature_map == "identity" and not hasattr(attn, "o_norm")
    assert torch.count_nonzero(attn.q_proj.bias) == 0  # biases start at zero (fla)
    for block in model.model.layers:
        torch.nn.init.normal_(block.attn.k_proj.bias)
    model.save_pretrained(tmp_path)
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert (loaded.config.feature_map, loaded.config.use_output_norm, loaded.config.qkv_bias) == (
        "identity", False, True,
    )
    ids = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
