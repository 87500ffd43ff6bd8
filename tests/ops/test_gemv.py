"""gsa.ops.triton.gemv.small_m_linear (decode-step projections with few rows) against float64, on the interpreter
(fp32/fp16) here and on the GPU through `device`."""

import pytest
import torch

pytest.importorskip("triton")

from gsa.ops.triton.gemv import MAX_ROWS, small_m_linear  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _reference(x, w, swiglu):
    x, w = x.double(), w.double()
    if swiglu:
        g, u = x.chunk(2, dim=-1)
        x = torch.nn.functional.silu(g) * u
    return x @ w.T


def _rel(a, b):
    return ((a.double() - b).norm() / b.norm()).item()


@pytest.mark.parametrize("swiglu", [False, True])
@pytest.mark.parametrize("rows", [1, 5, MAX_ROWS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16] + ([torch.bfloat16] if DEVICE == "cuda" else []))
def test_matches_float64_within_2x_of_torch(rows, swiglu, dtype):
    g = torch.Generator().manual_seed(rows)
    N, K = 40, 300  # a partial 16-column tile and a partial 256-wide K block
    x = torch.randn(rows, 1, 2 * K if swiglu else K, generator=g)
    w = torch.randn(N, K, generator=g) / K**0.5
    xd, wd = x.to(DEVICE, dtype), w.to(DEVICE, dtype)
    truth = _reference(xd.cpu(), wd.cpu(), swiglu)  # from the rounded inputs: only the arithmetic differs
    got = small_m_linear(xd, wd, swiglu=swiglu)
    assert got.shape == (rows, 1, N) and got.dtype == dtype
    if swiglu:
        gate, up = xd.chunk(2, dim=-1)
        base = (torch.nn.functional.silu(gate) * up) @ wd.T
    else:
        base = xd @ wd.T
    err, base_err = _rel(got.cpu(), truth), _rel(base.cpu(), truth)
    assert err <= 2 * base_err + (1e-6 if dtype == torch.float32 else 1e-4), (err, base_err)


def test_inputs_untouched_and_bad_arguments_refused():
    x, w = torch.randn(2, 64, device=DEVICE), torch.randn(16, 64, device=DEVICE)
    before = x.clone(), w.clone()
    small_m_linear(x, w)
    assert torch.equal(x, before[0]) and torch.equal(w, before[1])
    with pytest.raises(ValueError, match="last dim must be 128"):
        small_m_linear(x, w, swiglu=True)
    with pytest.raises(ValueError, match="at most 32 rows"):
        small_m_linear(torch.randn(33, 64, device=DEVICE), w)
    with pytest.raises(ValueError, match="contiguous"):
        small_m_linear(torch.randn(2, 16, device=DEVICE), w.T)
