# The README's two commands: `make demo` (the main job) and `make test` (the suite; CI runs exactly this).
# Both set themselves up in ./.venv on first use: `make demo` installs only what the package needs to run, `make test`
# adds the dev extras (pytest, the eval, convert and lora extras) and fla. PYTHON picks the interpreter (3.10+).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch 2.13.0: the CPU wheel where one is provided locally, the CUDA build from PyPI elsewhere.
TORCH_SPEC ?= torch==2.13.0
# Triton runs the GPU kernels, and on a CPU-only machine their tests under its interpreter.
TRITON_SPEC ?= triton==3.8.0
# fla (flash-linear-attention): the reference tests/convert/test_fla.py converts from and compares against. Its
# wheels are pure Python and need only what is installed above (torch, triton, transformers, einops), so they go
# in without dependencies, pinned: the conversion reproduces this version's GSA layer.
FLA_SPEC ?= fla-core==0.6.0 flash-linear-attention==0.6.0

.PHONY: demo test setup setup-dev clean

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "$(TORCH_SPEC)"
	$(BIN)/python -c "import triton" 2>/dev/null || $(BIN)/pip install "$(TRITON_SPEC)"
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -e ".[dev]"
	$(BIN)/pip install --no-deps $(FLA_SPEC)
	touch $@

demo: setup
	$(BIN)/gsa demo

# -n 2: two pytest-xdist workers, each with its share of the cores for torch's threads (tests/conftest.py)
test: setup-dev
	$(BIN)/python -m pytest -q -n 2

clean:
	rm -rf $(VENV) .pytest_cache
