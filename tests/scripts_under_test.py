"""Import a repository script (scripts/, benchmarks/) as a module by its path, for the tests that call its
functions or its main() in process."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_script(relative: str):
    """The module of REPO / relative (e.g. "scripts/t2r_layer_errors.py"), freshly executed."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
