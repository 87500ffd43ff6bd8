"""SETTINGS.mixed_dots (tiles.mixed_dot): the named kernels' (of kernel_a, kernel_o, kernel_dx, kernel_ds) products
of a float32 operand with a 16-bit one as two 16-bit dots, the float32 operand as its 16-bit rounding plus the
16-bit rounding of the rest. The setting applies to bf16 inputs only, which the Triton interpreter lacks: on the CPU
the split form is forced for fp16 inputs in all four (their parts stay in range at these inputs), and the GPU test
runs it as shipped, in bf16, in all four. Each against the float64 recurrence, every gradient and final state,
within 2x of plain PyTorch in the same dtype."""

import pytest
import torch

from skips import NO_TRITON

pytest.importorskip("triton", reason=NO_TRITON)

import gsa.ops.triton.chunk_a as chunk_a  # noqa: E402
import gsa.ops.triton.chunk_ds as chunk_ds  # noqa: E402
import gsa.ops.triton.chunk_dx as chunk_dx  # noqa: E402
import gsa.ops.triton.chunk_o as chunk_o  # noqa: E402
from gsa.ops import recurrent_reference  # noqa: E402
from gsa.ops.triton import SETTINGS  # noqa: E402
from gsa.ops.triton.launch import mixed_dots_mode  # noqa: E402
from launch_runs import SCALE, chunk_op, torch_op  # noqa: E402
from op_inputs import assert_ratio, cast, cpu, make_inputs, on, run  # noqa: E402

MODULES = (chunk_a, chunk_o, chunk_dx, chunk_ds)


def force_split(monkeypatch) -> list:
    """Every launch of the four kernels with MIX = 1, whatever the dtype; returns the (kernel, MIX) of each launch."""
    seen = []
    for module in MODULES:
        def record(kernel, grid, real=module.launch):
            go = real(kernel, grid)
            return lambda *a, **k: seen.append((kernel.__name__, k["MIX"])) or go(*a, **k)

        monkeypatch.setattr(module, "mixed_dots_mode", lambda dtype, kernel: 1)
        monkeypatch.setattr(module, "launch", record)
    return seen


@pytest.mark.parametrize("shape", [
    dict(B=1, T=65, HQ=2, H=1, K=32, V=16, M=16),  # grouped heads, a one-token last chunk
    dict(B=2, T=70, HQ=2, H=2, K=144, V=48, M=20),  # K > 128 (kernel_a's row blocks), partial D and slot tiles
])
def test_forced_split_within_2x_of_plain_pytorch(shape, monkeypatch):
    seen = force_split(monkeypatch)
    x = make_inputs(**shape, tau=4.0)
    truth = run(recurrent_reference, x, scale=SCALE)
    baseline = run(recurrent_reference, cast(x, torch.float16), scale=SCALE)
    got = cpu(run(chunk_op, on(cast(x, torch.float16))))
    # forward: kernel_a, kernel_o; backward: kernel_a (dp), kernel_dx twice, kernel_o (dq), kernel_ds
    assert len(seen) == 7 and all(mix == 1 for _, mix in seen), seen
    assert_ratio(got, baseline, truth, ratio=2.0, floor=1e-5)


def test_mixed_dots_mode():
    assert SETTINGS.mixed_dots == {"a"}  # the default: kernel_a only (settings.py)
    assert mixed_dots_mode(torch.bfloat16, "a") == 1 and mixed_dots_mode(torch.bfloat16, "o") == 0
    with SETTINGS.override(mixed_dots=["o", "dx", "ds"]):  # a JSON list, as `gsa bench grid --settings` gives it
        assert [mixed_dots_mode(torch.bfloat16, k) for k in ("a", "o", "dx", "ds")] == [0, 1, 1, 1]
        # fp16: its parts' range; float32: nothing to split
        assert mixed_dots_mode(torch.float16, "o") == mixed_dots_mode(torch.float32, "o") == 0
    message = r"SETTINGS.mixed_dots must be a set of kernel names from \('a', 'o', "
    for bad in ("a", ["a", "kernel_o"]):
        with SETTINGS.override(mixed_dots=bad):
            with pytest.raises(ValueError, match=message):
                mixed_dots_mode(torch.bfloat16, "a")


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [
    dict(B=2, T=130, HQ=4, H=4, K=128, V=128, M=64),
    dict(B=2, T=2048, HQ=4, H=4, K=128, V=128, M=64),  # 32 chunks
    dict(B=1, T=100, HQ=8, H=2, K=64, V=96, M=32),  # grouped heads
    dict(B=2, T=130, HQ=2, H=2, K=256, V=256, M=64),  # kernel_a's row blocks
])
def test_gpu_split_mixed_dots_within_2x_of_the_torch_backend(shape, monkeypatch):
    monkeypatch.setattr(SETTINGS, "mixed_dots", frozenset({"a", "o", "dx", "ds"}))
    x = on(make_inputs(**shape, tau=4.0), "cuda")
    truth = run(recurrent_reference, x, scale=SCALE)
    baseline = run(torch_op, on(cast(x, torch.bfloat16), "cuda"))
    assert_ratio(run(chunk_op, on(cast(x, torch.bfloat16), "cuda")), baseline, truth, ratio=2.0, floor=1e-5)
