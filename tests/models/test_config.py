"""GSAConfig: every field is validated, and changing any field changes the model."""

import dataclasses
import inspect

import pytest
import torch
from transformers import GenerationConfig

from conftest import TINY, tiny_config
from gsa.models import GSAConfig, GSAForCausalLM
from gsa.models.configuration import LAYER_FIELDS, swiglu_intermediate_size
from gsa.models.zoology import ZoologyConfig
from gsa.nn import GatedSlotAttention
from gsa.nn.options import LayerOptions

FIELDS = [p for p in inspect.signature(GSAConfig.__init__).parameters if p not in ("self", "kwargs")]

# field -> a valid value different from the tiny config's (or the default when the tiny config does not set it)
CHANGED = {
    "vocab_size": 103, "hidden_size": 64, "num_hidden_layers": 3, "num_heads": 2, "num_kv_heads": 4,
    "num_slots": 10, "expand_k": 0.5, "expand_v": 2.0, "gate_logit_normalizer": 16.0, "use_short_conv": False,
    "conv_size": 3, "attn_scale": 1.0, "hidden_ratio": 16.0, "intermediate_size": 96, "hidden_act": "gelu",
    "norm_eps": 0.1, "initializer_range": 0.5, "tie_word_embeddings": True, "pad_token_id": 5,
    "bos_token_id": 6, "eos_token_id": [2, 7], "feature_map": "identity", "use_output_norm": False, "qkv_bias": True,
    "forget_gate": "fixed", "slot_read": "linear", "window_size": 3, "num_sink_tokens": 2, "rope_theta": 50.0,
    "gate_bias": True, "gate_bias_range": [4.0, 4.0], "conv_bias": True, "feature_map_after_conv": True,
    "output_norm_eps": 0.1, "output_norm_affine": False,
}

INVALID = {
    "vocab_size": 0, "hidden_size": -32, "num_hidden_layers": 0, "num_heads": 0, "num_kv_heads": 3,
    "num_slots": 0, "expand_k": 0.3, "expand_v": -1.0, "gate_logit_normalizer": 0.0, "use_short_conv": "yes",
    "conv_size": 1, "attn_scale": -1.0, "hidden_ratio": 0.0, "intermediate_size": -1, "hidden_act": "tanh",
    "norm_eps": 0.0, "initializer_range": -0.02, "tie_word_embeddings": "no", "pad_token_id": 101,
    "bos_token_id": -1, "eos_token_id": [2, 500], "feature_map": "t2r", "use_output_norm": "no", "qkv_bias": 1,
    "forget_gate": "abc", "slot_read": "relu", "window_size": -1, "num_sink_tokens": -2, "rope_theta": 0.0,
    "gate_bias": "yes", "gate_bias_range": [4, 1], "conv_bias": 1, "feature_map_after_conv": "yes",
    "output_norm_eps": 0.0, "output_norm_affine": "no",
}


def test_tables_cover_every_field():
    assert sorted(CHANGED) == sorted(FIELDS) and sorted(INVALID) == sorted(FIELDS)


def _signature(**overrides):
    """What a config determines: parameter count, logits on fixed ids, and generate()'s special tokens."""
    config = tiny_config(**overrides)
    torch.manual_seed(0)
    model = GSAForCausalLM(config).double().eval()
    with torch.no_grad():
        logits = model(torch.arange(3, 11)[None]).logits
    gen = GenerationConfig.from_model_config(config)
    return sum(p.numel() for p in model.parameters()), logits, (gen.pad_token_id, gen.bos_token_id, gen.eos_token_id)


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_every_field_changes_the_model(field):
    overrides = {field: CHANGED[field]}
    if field == "hidden_ratio":
        overrides["intermediate_size"] = None  # the two describe one width: give one
    # feature_map="identity" needs no short convolution (the tiny config has one): compare both without it.
    base_overrides = {"use_short_conv": False} if field == "feature_map" else {}
    if field in ("num_sink_tokens", "rope_theta"):  # both act only in a hybrid layer (window_size > 0)
        base_overrides = {"window_size": 3}
    if field == "gate_bias_range":  # acts only on the bias gate_bias=True adds
        base_overrides = {"gate_bias": True}
    base, changed = _signature(**base_overrides), _signature(**base_overrides, **overrides)
    same = (
        base[0] == changed[0]
        and base[1].shape == changed[1].shape
        and torch.allclose(base[1], changed[1], atol=1e-12, rtol=0)
        and base[2] == changed[2]
    )
    assert not same, f"changing {field} changed nothing"


@pytest.mark.parametrize("field", sorted(INVALID))
def test_invalid_values_raise_naming_the_field(field):
    """The message starts with the config's own name for the field (not the layer argument it becomes)."""
    with pytest.raises(ValueError) as error:
        tiny_config(**{field: INVALID[field]})
    assert str(error.value).startswith(f"GSAConfig.{field}")


def _defaults(signature_of) -> dict:
    return {name: p.default for name, p in inspect.signature(signature_of).parameters.items()
            if name not in ("self", "kwargs")}


def test_layer_defaults_agree_everywhere():
    """LayerOptions, GatedSlotAttention's keywords (passed to LayerOptions in order), GSAConfig and ZoologyConfig
    give every layer option the same default, except where a config documents its own: GSAConfig's attention norm
    eps is its norm_eps (output_norm_eps None), Zoology's mixer has 2 heads as Zoology's configs."""
    options = {f.name: f.default for f in dataclasses.fields(LayerOptions)}
    layer = _defaults(GatedSlotAttention.__init__)
    assert list(layer) == list(options)  # same names in the same order: the layer passes them positionally
    assert layer == {**options, "hidden_size": inspect.Parameter.empty}
    config, zoology = _defaults(GSAConfig.__init__), _defaults(ZoologyConfig.__init__)
    renamed = {"scale": "attn_scale"}
    assert set(options) - {"hidden_size", "norm_eps", "scale"} == set(LAYER_FIELDS)
    for name, default in options.items():
        if name in ("hidden_size", "norm_eps"):
            continue
        assert config[renamed.get(name, name)] == default, name
        if renamed.get(name, name) in zoology and name != "num_heads":
            assert zoology[renamed.get(name, name)] == default, name
    assert config["output_norm_eps"] is None and zoology["num_heads"] == 2
    assert GSAConfig().layer_options() == LayerOptions(2048, norm_eps=1e-6)  # the model's norm_eps reaches the layer
    assert ZoologyConfig().layer_options() == LayerOptions(128, num_heads=2)


@pytest.mark.parametrize("field, argument, value", [
    ("num_slots", "num_slots", 0), ("attn_scale", "scale", -1.0), ("output_norm_eps", "norm_eps", 0.0),
    ("feature_map", "feature_map", "t2r"), ("gate_bias_range", "gate_bias_range", [4, 1]),
])
def test_layer_fields_are_checked_by_the_layer_options(field, argument, value):
    """The attention layer's fields are checked once, in LayerOptions: GSAConfig raises the layer's error under its
    own name for the field."""
    with pytest.raises(ValueError) as layer_error:
        LayerOptions(32, **{argument: value})
    with pytest.raises(ValueError) as config_error:
        tiny_config(**{field: value})
    assert str(config_error.value) == f"GSAConfig.{field}" + str(layer_error.value)[len(argument):]


def test_unknown_options_raise():
    with pytest.raises(ValueError, match="num_slot"):
        tiny_config(num_slot=8)
    with pytest.raises(ValueError, match="model_type"):
        GSAConfig(model_type="llama")


def test_intermediate_size_rule_and_conflicts():
    assert GSAConfig(hidden_size=2048).intermediate_size == 5632  # the 1.3B model's SwiGLU width
    assert swiglu_intermediate_size(1024, 4) == 2816
    assert GSAConfig(hidden_size=1024, hidden_ratio=4, intermediate_size=2816).intermediate_size == 2816
    with pytest.raises(ValueError, match="intermediate_size or hidden_ratio"):
        GSAConfig(hidden_size=1024, hidden_ratio=4, intermediate_size=2048)


def test_defaults_follow_the_spec():
    c = GSAConfig()
    assert (c.num_heads, c.num_kv_heads, c.num_slots, c.gate_logit_normalizer) == (4, 4, 64, 8.0)
    assert (c.expand_k, c.expand_v, c.use_short_conv, c.tie_word_embeddings) == (1.0, 1.0, False, False)
    assert (c.norm_eps, c.initializer_range, c.head_k_dim, c.head_v_dim) == (1e-6, 0.02, 512, 512)


def test_dict_round_trip():
    c = tiny_config(attn_scale=1.0, hidden_act="gelu")
    again = GSAConfig.from_dict(c.to_dict())
    assert again.to_dict() == c.to_dict()
    assert {k: getattr(again, k) for k in TINY} == TINY


def _as_numpy(value):
    """The numpy scalar of the same value: np.int64, np.float32 (exact for the values used), np.bool_, lists of them."""
    import numpy as np

    if isinstance(value, bool):
        return np.bool_(value)
    if isinstance(value, int):
        return np.int64(value)
    if isinstance(value, float):
        return np.float32(value)
    return [_as_numpy(v) for v in value] if isinstance(value, list) else value


@pytest.mark.parametrize("make", [GSAConfig, ZoologyConfig])
def test_numpy_scalars_are_the_numbers_they_hold(make):
    """Values computed with numpy (a sweep's np.arange, float32 arithmetic) configure a model as the same Python
    values do: every numeric and bool field takes them and keeps the Python value, so config.json is written as
    usual (np.float64 subclasses float and was taken; np.float32, np.int64 and np.bool_ were refused as not numbers)."""
    if make is GSAConfig:
        plain = dict(vocab_size=101, hidden_size=32, num_hidden_layers=2, num_heads=4, num_kv_heads=2, num_slots=8,
                     expand_k=0.5, expand_v=2.0, gate_logit_normalizer=16.0, use_short_conv=False, conv_size=3,
                     attn_scale=0.5, qkv_bias=True, window_size=4, num_sink_tokens=1, rope_theta=50.0, gate_bias=True,
                     gate_bias_range=[-2.0, 2.0], output_norm_eps=0.25, hidden_ratio=2.0, norm_eps=0.125,
                     initializer_range=0.25, tie_word_embeddings=True, pad_token_id=0, bos_token_id=1,
                     eos_token_id=[2, 3])
    else:
        plain = dict(vocab_size=50, hidden_size=16, num_hidden_layers=4, num_heads=2, num_slots=5,
                     gate_logit_normalizer=4.0, use_short_conv=True, attn_scale=0.5, gate_bias=True,
                     gate_bias_range=[-2.0, 2.0], conv_kernel=3, layer_norm_eps=0.125, initializer_range=0.25,
                     tie_word_embeddings=False)
    expected, config = make(**plain), make(**{k: _as_numpy(v) for k, v in plain.items()})
    assert config.to_json_string() == expected.to_json_string()
    for name in plain:
        value = getattr(config, name)
        values = value if isinstance(value, list) else [value]
        assert all(type(v) in (bool, int, float) for v in values), (name, value)
    assert make.from_dict(config.to_dict()).to_dict() == expected.to_dict()


def test_the_layer_takes_numpy_scalars():
    import numpy as np

    layer = GatedSlotAttention(np.int64(32), num_heads=np.int32(4), num_slots=np.int64(6), expand_v=np.float32(2.0),
                               gate_logit_normalizer=np.float32(4.0), use_short_conv=np.bool_(True))
    assert (layer.num_heads, layer.num_slots, layer.head_v_dim, layer.gate_logit_normalizer) == (4, 6, 16, 4.0)
    assert layer.use_short_conv is True and type(layer.num_slots) is int
    with pytest.raises(ValueError, match=r"num_slots must be a positive int, got np.float64\(6.0\)"):
        GatedSlotAttention(32, num_slots=np.float64(6.0))  # a float is not a count, numpy's or Python's
