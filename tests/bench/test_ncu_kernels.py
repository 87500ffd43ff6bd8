"""benchmarks/ncu_kernels.py (the Nsight Compute driver): its shapes are the grid's, and without a CUDA device it
says so instead of failing inside a kernel."""

import pytest
import torch

from scripts_under_test import load_script


def load():
    return load_script("benchmarks/ncu_kernels.py")


def test_unknown_shape_is_refused(capsys):
    with pytest.raises(SystemExit):
        load().main(["1.3"])
    assert "invalid choice: '1.3'" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_needs_a_cuda_device():
    with pytest.raises(SystemExit, match="needs a CUDA device"):
        load().main(["1.3b"])


def test_unknown_impl_is_refused(capsys):
    with pytest.raises(SystemExit):
        load().main(["1.3b", "--impl", "flax"])
    assert "invalid choice: 'flax'" in capsys.readouterr().err
