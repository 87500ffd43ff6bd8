"""The trainer's registry (gsa.train.registry): importing gsa.convert fills it; a config that needs what it holds
fails, when nothing registered it, before any work and naming the import."""

import pytest

import gsa.convert
from gsa.errors import InputError
from gsa.train import load_config, registry
from gsa.train.loop import train
from train.helpers import TINY, tiny_overrides


@pytest.fixture
def unregistered(monkeypatch):
    """The registry as in a process that never imported gsa.convert."""
    monkeypatch.setattr(registry, "_model_types", {})
    monkeypatch.setattr(registry, "_distillation", [])


def _config(tmp_path, *extra):
    return load_config(TINY, tiny_overrides(tmp_path / "cache", tmp_path / "out", **{"data.documents": False})
                       + list(extra))


def test_importing_convert_registers_t2r_and_distillation():
    t2r = registry.registered_model_type("t2r")
    assert (t2r.source, t2r.accept, t2r.load) == ("teacher", None, gsa.convert.training.converted_student)
    assert registry.distillation_factory() is gsa.convert.training.T2RDistillation
    with pytest.raises(ValueError, match="already registered"):
        registry.register_model_type("t2r", t2r)
    with pytest.raises(ValueError, match="already registered"):
        registry.register_distillation(gsa.convert.training.T2RDistillation)


def test_unregistered_model_type_names_the_import(unregistered, tmp_path):
    cfg = _config(tmp_path, f'model={{type = "t2r", teacher = "{tmp_path}"}}')
    with pytest.raises(InputError, match=r"\[model\] type = 't2r' is not registered with the trainer: `import "
                                         r"gsa.convert` first \(the `gsa train` command does\)"):
        train(cfg)
    assert not (tmp_path / "out").exists()  # refused before any work


def test_unregistered_distillation_names_the_import(unregistered, tmp_path):
    cfg = _config(tmp_path, f'distill.teacher="{tmp_path}"')
    with pytest.raises(InputError, match="distill.teacher is set, but the distillation objective is not registered "
                                         "with the trainer: `import gsa.convert` first"):
        train(cfg)
    assert not (tmp_path / "out").exists()


def test_an_unknown_model_type_is_refused_by_name():
    from gsa.train.model import build_model

    with pytest.raises(InputError, match=r"\[model\] type = 'mamba' is not registered with the trainer$"):
        build_model({"type": "mamba"}, 16)
