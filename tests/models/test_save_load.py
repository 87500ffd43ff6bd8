"""save_pretrained / from_pretrained (safetensors) and the Auto classes."""

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

import gsa.models  # noqa: F401  (registers "gsa" with the Auto classes)
from gsa.models import GSAConfig, GSAForCausalLM, GSAModel


def _fields(config) -> dict:
    """The config minus what loading itself records (the path, dtype, version, architectures)."""
    bookkeeping = {"_name_or_path", "dtype", "transformers_version", "architectures"}
    return {k: v for k, v in config.to_dict().items() if k not in bookkeeping}


HYBRID = dict(window_size=3, num_sink_tokens=1, rope_theta=100.0)


@pytest.mark.parametrize("tie,hybrid", [(False, False), (True, False), (False, True)])
def test_round_trip_gives_identical_logits(make_model, tmp_path, tie, hybrid):
    model = make_model(dtype=torch.float32, tie_word_embeddings=tie, **(HYBRID if hybrid else {}))
    if hybrid:  # a trained share of the slot memory must survive the round trip
        with torch.no_grad():
            for block in model.model.layers:
                block.attn.memory_scale.normal_()
    ids = torch.randint(3, 101, (2, 6))
    with torch.no_grad():
        want = model(ids).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "config.json").exists()

    for loader in (GSAForCausalLM, AutoModelForCausalLM):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert type(loaded) is GSAForCausalLM
        assert _fields(loaded.config) == _fields(model.config)
        with torch.no_grad():
            torch.testing.assert_close(loaded(ids).logits, want, atol=0, rtol=0)
        tied = loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
        assert tied == tie


def test_auto_config_and_base_model(make_model, tmp_path):
    model = make_model(dtype=torch.float32)
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), GSAConfig)
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert type(base) is GSAModel
    ids = torch.randint(3, 101, (1, 5))
    with torch.no_grad():
        torch.testing.assert_close(base(ids).last_hidden_state, model.model(ids).last_hidden_state, atol=0, rtol=0)
    assert type(AutoModelForCausalLM.from_config(model.config)) is GSAForCausalLM


def test_untied_head_is_a_separate_parameter(make_model):
    untied = make_model(tie_word_embeddings=False)
    tied = make_model(tie_word_embeddings=True)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(untied) - n(tied) == 101 * 32
