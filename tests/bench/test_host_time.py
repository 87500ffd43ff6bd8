"""benchmarks/host_time.py (wall clock against the host's enqueue time): bad shapes and settings are refused by name
before any GPU work, and without a CUDA device it says so."""

import pytest
import torch

from scripts_under_test import load_script


def load():
    return load_script("benchmarks/host_time.py")


def test_unknown_shape_and_settings_are_refused():
    with pytest.raises(SystemExit, match=r"unknown shape\(s\) \['1.3'\]"):
        load().main(["--shapes", "1.3b,1.3"])
    with pytest.raises(SystemExit, match="must be an object of SETTINGS fields"):
        load().main(["--shapes", "1.3b", "--variants", '{"overlapp": false}'])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_needs_a_cuda_device():
    with pytest.raises(SystemExit, match="needs a CUDA device"):
        load().main(["--shapes", "1.3b", "--variants", '{"overlap": false}'])
