# The README's two commands: `make demo` (the main job) and `make test` (the suite; CI runs exactly this).
# Both set themselves up in ./.venv on first use. PYTHON picks the interpreter (3.10+).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch 2.13.0: the CPU wheel where one is provided locally, the CUDA build from PyPI elsewhere.
TORCH_SPEC ?= torch==2.13.0
# Triton runs the GPU kernels, and on a CPU-only machine their tests under its interpreter.
TRITON_SPEC ?= triton==3.8.0

.PHONY: demo test setup clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "$(TORCH_SPEC)"
	$(BIN)/python -c "import triton" 2>/dev/null || $(BIN)/pip install "$(TRITON_SPEC)"
	$(BIN)/pip install -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/gsa demo

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
