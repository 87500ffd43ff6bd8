"""benchmarks/kl_loss.py (the distillation loss's three paths on a GPU): sizes checked, and without a CUDA device it
says so."""

import pytest
import torch

from scripts_under_test import load_script


def test_sizes_are_checked():
    with pytest.raises(SystemExit, match="must be positive, got 0 and 49152"):
        load_script("benchmarks/kl_loss.py").main(["--rows", "0"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_needs_a_cuda_device():
    with pytest.raises(SystemExit, match="needs a CUDA device"):
        load_script("benchmarks/kl_loss.py").main([])


@pytest.mark.gpu
def test_gpu_kl_loss_paths_agree(capsys):
    load_script("benchmarks/kl_loss.py").main(["--rows", "256", "--vocab", "5000"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split("|") for line in lines if line.startswith("| ") and "ms" not in line]
    losses = [float(r[4]) for r in rows if r[1].strip() not in ("---",)]
    assert len(losses) == 3 and max(losses) - min(losses) < 1e-4 * max(1.0, abs(losses[0])), losses
