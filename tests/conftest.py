"""Test-wide setup.

- With no CUDA device, Triton kernels run under the interpreter; TRITON_INTERPRET must be set before any
  kernel module is imported, hence here, at collection start.
- Deterministic mode makes torch.empty (and every uninitialised allocation) come back filled with NaN, so an
  output element a kernel forgets to write fails loudly instead of passing on a lucky zero.
- Tests marked `gpu` are skipped, with the reason, when no CUDA device is present.
- `--kernel-settings JSON` runs the tests under other gsa.ops.triton.SETTINGS fields (a variant not yet the
  default, e.g. '{"chunk_states": "auto", "keep_states": true}'); tests that assert the defaults fail under it.
"""

import json
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

# Under pytest-xdist (make test: -n 2) each worker gets its share of the cores: torch's default of one thread a core in
# every worker would oversubscribe them.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT") and not torch.cuda.is_available():
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

torch.use_deterministic_algorithms(True, warn_only=True)
torch.utils.deterministic.fill_uninitialized_memory = True


def pytest_addoption(parser):
    parser.addoption("--kernel-settings", metavar="JSON", default=None,
                     help="a JSON object of gsa.ops.triton.SETTINGS fields to run the tests under")


def pytest_configure(config):
    spec = config.getoption("--kernel-settings")
    if spec is None:
        return
    from gsa.ops.triton import SETTINGS

    fields = json.loads(spec)
    if not isinstance(fields, dict):
        raise pytest.UsageError(f"--kernel-settings takes a JSON object of SETTINGS fields, got {spec!r}")
    for name, value in fields.items():
        if not hasattr(SETTINGS, name):
            raise pytest.UsageError(f"--kernel-settings: SETTINGS has no field {name!r}")
        setattr(SETTINGS, name, value)


def pytest_report_header(config):
    spec = config.getoption("--kernel-settings")
    return None if spec is None else f"gsa.ops.triton.SETTINGS under --kernel-settings {spec}"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (tests marked gpu; benchmarks/recipes/gpu-tests.sh runs them on a GPU)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
