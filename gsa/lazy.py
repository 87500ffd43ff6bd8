"""Package attributes resolved on first use (PEP 562), so that importing a package stays cheap.

`gsa --help` (and every `gsa` command's argument parsing) imports `gsa`, `gsa.train` and `gsa.eval`; their public
names live in modules that import torch and transformers (seconds), so the packages export them lazily.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def lazy_exports(package: str, exports: dict[str, str]) -> None:
    """Make `package` (call this from its __init__) resolve each public name on first use: exports maps the name
    to the module (absolute, or relative to `package`) defining it."""
    sys.modules[package].__class__ = _LazyPackage
    sys.modules[package].__dict__["_lazy_exports"] = exports


class _LazyPackage(types.ModuleType):
    def __getattr__(self, name: str) -> object:
        exports = self.__dict__["_lazy_exports"]
        if name not in exports:
            # a submodule not imported yet (`import gsa; gsa.ops.gated_slot_attention(...)`), as an eager package
            # that imports its submodules would have it
            if not name.startswith("_") and importlib.util.find_spec(f"{self.__name__}.{name}") is not None:
                return importlib.import_module(f"{self.__name__}.{name}")
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], self.__name__), name)
        super().__setattr__(name, value)
        return value

    def __setattr__(self, name: str, value: object) -> None:
        # Importing a submodule binds it on its package; where a public name is also a submodule's
        # (gsa.eval.perplexity, the function and its module), the name stays the function, as an eager
        # `from .perplexity import perplexity` leaves it.
        if name in self.__dict__["_lazy_exports"] and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.__dict__["_lazy_exports"]))
