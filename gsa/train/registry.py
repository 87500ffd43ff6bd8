"""What the trainer takes from the packages above it: `[model]` types that load a checkpoint directory, and the
objective of the `[distill]` section.

gsa.train imports only the layers below it (tests/test_import.py checks this). Transformer -> GSA conversion lives
in gsa.convert, which registers model type "t2r" and the distillation objective here when it is imported. The
`gsa train` command and `python -m gsa.train` import it; Python code that trains such a config imports gsa.convert
first. A config that needs one that nothing registered fails before any work, naming the import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gsa.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .config import Config

# the package registering each extension the config schema names (for the error when it was not imported)
PROVIDERS = {"t2r": "gsa.convert", "distill": "gsa.convert"}


@dataclass(frozen=True)
class LoadedModelType:
    """A `[model]` type made from a checkpoint directory. source: the section's key naming the directory; accept:
    the model types (config.json's model_type) the directory may hold, None for any (checked before any data is
    read); load(directory, options) -> the model, options being the section's other keys (InputError naming a bad
    one)."""

    source: str
    accept: tuple[str, ...] | None
    load: Callable[[str, dict[str, Any]], nn.Module]


class Distillation(Protocol):
    """The `[distill]` objective of one run, made as factory(cfg, device): it holds the frozen teacher."""

    teacher: nn.Module

    def prepare_student(self, student: nn.Module, first_windows: Callable[[int], torch.Tensor],
                        log: Callable[[str], None]) -> None:
        """Before the optimizer (and LoRA) sees the student; first_windows(n) -> input_ids [n, T] of the first n
        training windows."""

    def loss(self, student: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The stage's loss on one batch (student: the plain, unwrapped model)."""


DistillationFactory = Callable[["Config", "torch.device"], Distillation]

_model_types: dict[str, LoadedModelType] = {}
_distillation: list[DistillationFactory] = []  # at most one


def _missing(what: str, name: str) -> InputError:
    hint = f": `import {PROVIDERS[name]}` first (the `gsa train` command does)" if name in PROVIDERS else ""
    return InputError(f"{what} is not registered with the trainer{hint}")


def _same_definition(old: Callable, new: Callable) -> bool:
    """Whether two callables are one definition run twice (same module and qualified name), as a reloaded module
    registers."""
    def key(fn):
        return getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)

    return None not in key(old) and key(old) == key(new)


def _already(what: str, old: Callable) -> ValueError:
    return ValueError(f"{what} is already registered by {getattr(old, '__module__', 'another module')}")


def register_model_type(name: str, model_type: LoadedModelType) -> None:
    """Register `[model]` type `name`. The same definition registered again (its module run again: importlib.reload)
    replaces the entry; another provider for the name is refused."""
    old = _model_types.get(name)
    if old is not None and not _same_definition(old.load, model_type.load):
        raise _already(f"[model] type {name!r}", old.load)
    _model_types[name] = model_type


def registered_model_type(name: str) -> LoadedModelType:
    """The registered `[model]` type `name`; InputError naming the import that registers it."""
    if name not in _model_types:
        raise _missing(f"[model] type = {name!r}", name)
    return _model_types[name]


def register_distillation(factory: DistillationFactory) -> None:
    """Register the `[distill]` objective: as register_model_type, the same definition again replaces it."""
    if _distillation and not _same_definition(_distillation[0], factory):
        raise _already("a distillation objective", _distillation[0])
    _distillation[:] = [factory]


def distillation_factory() -> DistillationFactory:
    """The registered `[distill]` objective's factory; InputError naming the import that registers it."""
    if not _distillation:
        raise _missing("distill.teacher is set, but the distillation objective", "distill")
    return _distillation[0]
