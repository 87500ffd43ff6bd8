"""feature_map="learned": per-head maps on q and k that start as the identity (layer, conversion, save/load,
decoding)."""

import pytest
import torch
import torch.nn.functional as F

import gsa.models  # noqa: F401  (registers "gsa" with the Auto classes)
from convert_teachers import make_teacher  # noqa: F401  (fixtures)
from gsa.convert import from_pretrained_transformer
from gsa.models import GSAConfig, GSAForCausalLM
from gsa.nn import GatedSlotAttention
from gsa.nn.feature_map import LearnedFeatureMap


def test_map_is_the_identity_at_init_and_follows_its_formula():
    torch.manual_seed(0)
    phi = LearnedFeatureMap(3, 4).double()
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    torch.testing.assert_close(phi(x), x, rtol=0, atol=0)
    with torch.no_grad():
        phi.w2.normal_()
        phi.b1.normal_()
    h = x.view(2, 5, 3, 4)
    want = torch.stack([h[..., i, :] + F.silu(h[..., i, :] @ phi.w1[i] + phi.b1[i]) @ phi.w2[i] for i in range(3)], -2)
    torch.testing.assert_close(phi(x), want.reshape(2, 5, 12), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="heads \\* dim"):
        phi(torch.randn(2, 5, 11, dtype=torch.float64))


def test_learned_layer_maps_q_and_k_per_head():
    torch.manual_seed(0)
    kw = dict(num_heads=4, num_kv_heads=2, num_slots=5, use_output_norm=False)
    layer = GatedSlotAttention(24, feature_map="learned", **kw).double()
    ident = GatedSlotAttention(24, feature_map="identity", **kw).double()
    ident.load_state_dict({k: v for k, v in layer.state_dict().items() if "_map." not in k})
    assert layer.q_map.heads == 4 and layer.k_map.heads == 2 and layer.q_map.dim == 6
    x = torch.randn(2, 9, 24, dtype=torch.float64)
    torch.testing.assert_close(layer(x)[0], ident(x)[0], rtol=0, atol=0)  # identity maps: the identity layer
    with torch.no_grad():
        layer.q_map.w2.normal_()
        layer.k_map.w2.normal_()
    moved = (layer(x)[0] - ident(x)[0]).abs().max()
    assert moved > 1e-3
    # the maps act on q and k only: the same output as the identity layer fed phi(W_q x), phi(W_k x)
    q, k, v, f, _ = layer._projections(x)
    torch.testing.assert_close(q, layer.q_map(layer.q_proj(x)), rtol=0, atol=0)
    torch.testing.assert_close(k, layer.k_map(layer.k_proj(x)), rtol=0, atol=0)
    torch.testing.assert_close(v, layer.v_proj(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="use_short_conv"):
        GatedSlotAttention(24, feature_map="learned", use_short_conv=True)


def test_learned_model_decodes_its_own_forward_and_round_trips(tmp_path):
    config = GSAConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_heads=4, num_kv_heads=2,
                       num_slots=4, intermediate_size=32, feature_map="learned", use_output_norm=False)
    torch.manual_seed(0)
    model = GSAForCausalLM(config).eval()
    maps = model.model.layers[0].attn.q_map
    assert torch.count_nonzero(maps.w2) == 0 and torch.count_nonzero(maps.w1) > 0  # identity from scratch too
    for block in model.model.layers:
        for m in (block.attn.q_map, block.attn.k_map):
            torch.nn.init.normal_(m.w2, std=0.3)
    model.save_pretrained(tmp_path)
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(3, 50, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
        out = model.generate(ids[:1, :4], max_new_tokens=5, do_sample=False, min_new_tokens=5)
        full = model(out[:, :-1]).logits  # greedy decoding picks the full forward's argmax at every step
        assert torch.equal(full[0, 3:].argmax(-1), out[0, 4:])
        one = model(ids[:, :1]).logits
        model.fuse_projections()  # decoding's one-matrix q/k/v/f product: the maps still apply after it
        assert model.model.layers[0].attn._fused is not None
        torch.testing.assert_close(model(ids[:, :1]).logits, one, rtol=1e-5, atol=1e-5)


def test_conversion_starts_learned_maps_as_the_identity_student(make_teacher):
    teacher = make_teacher("qwen2")
    learned = from_pretrained_transformer(teacher, num_slots=8, feature_map="learned", seed=3)
    ident = from_pretrained_transformer(teacher, num_slots=8, seed=3)
    again = from_pretrained_transformer(teacher, num_slots=8, feature_map="learned", seed=3)
    assert all(torch.equal(p, dict(again.named_parameters())[n]) for n, p in learned.named_parameters())  # seeded
    ids = torch.randint(3, 97, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(learned(ids).logits, ident(ids).logits, rtol=0, atol=0)


def test_maps_missing_from_a_checkpoint_start_as_the_identity(tmp_path):
    """An identity-map checkpoint loaded as a learned-map model (output_loading_info=True lets missing tensors
    through): transformers reports the maps as newly initialised, so they must hold the identity map's init, not
    uninitialised memory, and the model must compute what the identity model does."""
    kw = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_heads=4, num_kv_heads=2, num_slots=4,
              intermediate_size=32, use_output_norm=False)
    torch.manual_seed(0)
    ident = GSAForCausalLM(GSAConfig(feature_map="identity", **kw)).eval()
    ident.save_pretrained(tmp_path)
    learned, info = GSAForCausalLM.from_pretrained(tmp_path, feature_map="learned", output_loading_info=True)
    assert set(info["missing_keys"]) == {f"model.layers.{i}.attn.{m}.{w}" for i in range(2)
                                         for m in ("q_map", "k_map") for w in ("w1", "b1", "w2")}
    for block in learned.model.layers:
        for m in (block.attn.q_map, block.attn.k_map):
            assert torch.count_nonzero(m.w2) == 0 and torch.count_nonzero(m.b1) == 0
            assert 0.5 < float(m.w1.detach().std() * m.dim**0.5) < 2  # W1 ~ N(0, 1 / dim)
    ids = torch.randint(3, 50, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(learned.eval()(ids).logits, ident(ids).logits, rtol=0, atol=0)
