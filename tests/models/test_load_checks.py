"""Loading refuses what would otherwise come back with random, lost or garbage weights: missing, unexpected or
reshaped tensors, a foreign or missing config, corrupted files; a model saved without the weights manifest still
loads, and so does a good one through every entry point."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from gsa.models.configuration import GSAConfig
import gsa.models  # noqa: F401  (registers our model types with the Auto classes)
from bad_inputs import damaged_models
from gsa.errors import InputError
from gsa.models import GSAForCausalLM, GSAModel
from gsa.models.loading import WEIGHTS_MANIFEST, check_finite, load_pretrained, resolve_device


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return damaged_models(tmp_path_factory.mktemp("models"))


REFUSED = {
    "no_q_proj": r"missing tensors model\.layers\.1\.attn\.q_proj\.weight\)",
    "no_lm_head": r"missing tensors lm_head\.weight\)",
    "more_layers": r"missing tensors model\.layers\.2\.attn\.f_proj\.weight, .* and 6 more",
    "fewer_layers": r"unexpected tensors model\.layers\.1\.",
    "other_slots": r"another shape: model\.layers\.0\.attn\.f_proj\.weight \(32, 32\) saved, \(64, 32\) in the model",
    "corrupted": r"model\.safetensors is corrupted: its SHA-256 differs",
    "truncated": r"model\.safetensors has \d+ bytes, \d+ when it was saved",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
@pytest.mark.parametrize("loader", [GSAForCausalLM.from_pretrained, AutoModelForCausalLM.from_pretrained,
                                    load_pretrained], ids=["GSAForCausalLM", "Auto", "load_pretrained"])
def test_weights_that_do_not_fit_are_refused(models, name, loader):
    with pytest.raises(InputError, match=REFUSED[name]):
        loader(models[name])


@pytest.mark.parametrize("name, message", [
    ("llama_type", r"holds a 'llama' model where a 'gated_slot_attention' one is expected: convert it with `gsa convert --from "),
    ("fla_config", r"looks like a flash-linear-attention GSA checkpoint \(config keys attn, fuse_cross_entropy, "
                   r"fuse_norm, use_output_gate\): convert it with `gsa convert --from .* --to OUT`"),
    ("no_config", r"has no config\.json: not a model saved with save_pretrained"),
    ("bad_json_config", r"config\.json is not valid JSON"),
])
def test_foreign_or_missing_config_is_refused(models, name, message):
    with pytest.raises(InputError, match=message):
        GSAForCausalLM.from_pretrained(models[name])
    with pytest.raises(InputError, match=message):
        load_pretrained(models[name], accept=[GSAConfig.model_type])


def test_a_llama_config_over_gsa_weights_is_refused_even_where_any_model_type_goes(models):
    """The Auto classes would build a randomly initialised Llama from it; load_pretrained names the lost tensors."""
    with pytest.raises(InputError, match=r"missing tensors model\.layers\.0\.input_layernorm\.weight.*unexpected "
                                         r"tensors model\.layers\.0\.attn\."):
        load_pretrained(models["llama_type"])


def test_non_finite_weights_are_refused_by_the_command_path(models):
    model = GSAForCausalLM.from_pretrained(models["nan_weights"])  # the library loads what was saved
    with pytest.raises(InputError, match=r"model\.norm\.weight holds NaN or infinite values"):
        check_finite(model, models["nan_weights"])
    with pytest.raises(InputError, match=r"model\.norm\.weight holds NaN"):
        load_pretrained(models["nan_weights"])


def test_good_model_loads_everywhere_and_the_manifest_is_optional(models, tmp_path):
    good = models["good"]
    assert (good / WEIGHTS_MANIFEST).is_file()
    ids = torch.randint(0, 257, (1, 7))
    with torch.no_grad():
        want = GSAForCausalLM.from_pretrained(good)(ids).logits
        for model in (AutoModelForCausalLM.from_pretrained(good), load_pretrained(good, accept=[GSAConfig.model_type])):
            torch.testing.assert_close(model(ids).logits, want, atol=0, rtol=0)
        older = tmp_path / "older"  # saved before the manifest existed
        older.mkdir()
        for f in good.iterdir():
            if f.name != WEIGHTS_MANIFEST:
                older.joinpath(f.name).write_bytes(f.read_bytes())
        torch.testing.assert_close(GSAForCausalLM.from_pretrained(older)(ids).logits, want, atol=0, rtol=0)
    assert type(GSAModel.from_pretrained(good)) is GSAModel  # the base model leaves the LM head behind


def test_output_loading_info_reports_instead_of_raising(models):
    model, info = GSAForCausalLM.from_pretrained(models["no_q_proj"], output_loading_info=True)
    assert info["missing_keys"] == {"model.layers.1.attn.q_proj.weight"}
    with pytest.raises(InputError, match="another shape"):  # shapes still must match unless asked otherwise
        GSAForCausalLM.from_pretrained(models["other_slots"], output_loading_info=True)
    _, info = GSAForCausalLM.from_pretrained(models["other_slots"], output_loading_info=True,
                                             ignore_mismatched_sizes=True)
    assert {key for key, *_ in info["mismatched_keys"]} == {f"model.layers.{i}.attn.f_proj.weight" for i in (0, 1)}


@pytest.mark.parametrize("spec, message", [
    ("tpu0", r"--device 'tpu0' is not a device"),
    ("mps", r"--device mps: only cpu and cuda"),
    ("cuda:99", r"--device cuda:99: this machine has"),
])
def test_resolve_device(spec, message):
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError, match=message):
        resolve_device(spec)
