"""The trainer's registry (gsa.train.registry): importing gsa.convert fills it; a config that needs what it holds
fails, when nothing registered it, before any work and naming the import."""

import importlib.util

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
    with pytest.raises(ValueError, match=r"\[model\] type 't2r' is already registered by gsa.convert.training"):
        registry.register_model_type("t2r", registry.LoadedModelType("teacher", None, lambda directory, options: None))
    with pytest.raises(ValueError, match="a distillation objective is already registered by gsa.convert.training"):
        registry.register_distillation(lambda cfg, device: None)


@pytest.mark.parametrize("name, refused", [("gsa.convert.training", False), ("copy_of_convert.training", True)])
def test_running_the_registering_module_again(monkeypatch, name, refused):
    """The module run again under its own name (importlib.reload, an editor's autoreload) replaces its own entries,
    which raised "already registered" halfway through the reload and kept the stale ones; the same file under
    another module name is another provider and is refused."""
    monkeypatch.setattr(registry, "_model_types", dict(registry._model_types))
    monkeypatch.setattr(registry, "_distillation", list(registry._distillation))
    spec = importlib.util.spec_from_file_location(name, gsa.convert.training.__file__)
    again = importlib.util.module_from_spec(spec)
    if refused:
        with pytest.raises(ValueError, match="already registered by gsa.convert.training"):
            spec.loader.exec_module(again)
        return
    spec.loader.exec_module(again)
    assert again.converted_student is not gsa.convert.training.converted_student  # a second definition
    assert registry.registered_model_type("t2r").load is again.converted_student
    assert registry.distillation_factory() is again.T2RDistillation


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


@pytest.mark.slow
def test_every_module_entry_point_loads_the_registry(tmp_path):
    """`python -m gsa.train` and `python -m gsa.train.cli` (the trainer CLI module's own entry) run one command: a
    t2r config gets as far as its teacher directory in both (the second stopped at "not registered")."""
    import subprocess
    import sys

    from train.helpers import TINY, subprocess_env

    argv = ["--config", str(TINY), f'model={{type = "t2r", teacher = "{tmp_path / "none"}"}}',
            f'output_dir="{tmp_path / "out"}"']
    procs = [subprocess.Popen([sys.executable, "-m", module, *argv], cwd=tmp_path, env=subprocess_env(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for module in ("gsa.train", "gsa.train.cli")]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert (proc.returncode, err.strip()) == (2, f"python -m gsa.train: error: {tmp_path / 'none'} is not a "
                                                     "directory (a model saved with save_pretrained is one)")
