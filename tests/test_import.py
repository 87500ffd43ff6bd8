"""`import gsa` works, and the CPU path runs, on a machine without triton (our code imports it only on use); the
packages import only the layers below them."""

import ast
import pathlib
import subprocess
import sys

CODE = r"""
import sys
sys.modules["triton"] = None  # any `import triton` now raises ImportError, as on a machine without it
import torch, gsa
from gsa.ops.api import resolve_backend
assert resolve_backend("auto", torch.device("cpu")) == "torch"
q = torch.randn(1, 70, 2, 8); k = torch.randn(1, 70, 2, 8); v = torch.randn(1, 70, 2, 8)
g = -torch.rand(1, 70, 2, 4); s = 1 - g.exp()
o, _ = gsa.gated_slot_attention(q, k, v, s, g)
model = gsa.GSAForCausalLM(gsa.GSAConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_heads=2))
print(model(torch.randint(0, 50, (1, 9))).logits.shape, o.shape)
"""


def test_import_and_cpu_path_without_triton():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "torch.Size([1, 9, 50]) torch.Size([1, 70, 2, 8])" in out.stdout


# Imports point downward. The packages each gsa package may import, beside gsa.errors and gsa.lazy (shared helpers
# that import nothing of gsa's packages); the top level (gsa.cli, gsa.demo, gsa.generate) may import anything.
# gsa.convert registers model type "t2r" and the distillation objective with gsa.train.registry, so the trainer
# itself imports neither conversion nor evaluation.
LOWER = {
    "ops": set(),
    "nn": {"ops"},
    "models": {"ops", "nn"},
    "data": set(),
    "train": {"ops", "nn", "models", "data"},
    "eval": {"ops", "nn", "models", "data"},
    "bench": {"ops", "nn", "models", "data"},
    "convert": {"ops", "nn", "models", "data", "train"},
}
SHARED = {"errors", "lazy"}
GSA = pathlib.Path(__file__).resolve().parents[1] / "gsa"


def _imported(source: str, module: str, is_package: bool) -> set[str]:
    """The gsa modules `source` (the text of module `module`) imports anywhere, function bodies included, relative
    imports resolved; a name imported from the root package `gsa` is the module that defines it."""
    import gsa

    here = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
            if base == "gsa":  # `from gsa import x`: a subpackage, a lazily exported name, or the root itself
                exports = gsa.__dict__["_lazy_exports"]
                found |= {exports.get(a.name, f"gsa.{a.name}") for a in node.names}
            else:
                found.add(base)
    return {name for name in found if name == "gsa" or name.startswith("gsa.")}


def _layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def test_the_import_checker_sees_lazy_relative_and_root_imports():
    source = ("import gsa.ops.api\nfrom ..eval import passkey\nfrom . import model\n"
              "def f():\n    from gsa.convert import training\n    from gsa import GSAConfig, bench\n")
    assert _imported(source, "gsa.train.loop", is_package=False) == {
        "gsa.ops.api", "gsa.eval", "gsa.train", "gsa.convert", "gsa.models", "gsa.bench"}
    assert _imported("from .passkey import x", "gsa.data", is_package=True) == {"gsa.data.passkey"}


def test_packages_import_only_lower_layers():
    """Every module of each layered package (the `python -m` entry points, __main__.py, excepted: nothing imports
    them, and gsa.train's runs the `gsa` command's module) imports only its own package, the layers below it and
    the shared helpers."""
    wrong, checked = [], 0
    for package, lower in LOWER.items():
        for path in sorted((GSA / package).rglob("*.py")):
            if path.name == "__main__.py":
                continue
            parts = path.relative_to(GSA.parent).with_suffix("").parts
            is_package = path.name == "__init__.py"
            module = ".".join(parts[:-1] if is_package else parts)
            checked += 1
            for name in _imported(path.read_text(), module, is_package):
                layer = _layer(name)
                if layer not in {package, *lower, *SHARED}:
                    wrong.append(f"{module} imports {name}")
    assert checked > 60  # every module of every package, not an empty glob
    assert wrong == [], "\n".join(wrong)


SUBMODULE_CODE = r"""
import sys, gsa
assert "torch" not in sys.modules  # import gsa stays cheap
assert callable(gsa.ops.gated_slot_attention) and gsa.nn.GatedSlotAttention  # submodules load on first use
for name in ("nope", "_private"):
    try:
        getattr(gsa, name)
    except AttributeError as e:
        assert repr(name) in str(e)
    else:
        raise SystemExit(f"gsa.{name} resolved")
print("ok")
"""


def test_submodules_resolve_on_first_use_in_a_fresh_interpreter():
    """`import gsa; gsa.ops....` works as with an eager package (the README's op example), while `import gsa` itself
    still loads no torch; a name that is neither an export nor a submodule is an AttributeError naming it."""
    r = subprocess.run([sys.executable, "-c", SUBMODULE_CODE], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
