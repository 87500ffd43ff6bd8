"""The one-token decode product (gsa.ops.triton.gemv) against float64 and against F.linear in the same dtype, at
awkward sizes (interpreter on the CPU; the GPU run checks it with programmatic dependent launch), and where the
decode path uses it."""

import pytest
import torch
import torch.nn.functional as F

from op_inputs import rel_err
from skips import NO_TRITON

pytest.importorskip("triton", reason=NO_TRITON)
from gsa.ops.triton import gemv as gemv_mod  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("N, K, bias", [(37, 200, False), (8, 16, True), (1001, 96, True), (5, 300, False)])
def test_gemv_within_2x_of_linear(dtype, N, K, bias):
    g = torch.Generator().manual_seed(N * K)
    x64 = torch.randn(1, 1, K, generator=g, dtype=torch.float64)
    w64 = torch.randn(N, K, generator=g, dtype=torch.float64) / K**0.5
    b64 = torch.randn(N, generator=g, dtype=torch.float64) if bias else None
    truth = F.linear(x64, w64, b64)
    x, w = x64.to(DEVICE, dtype), w64.to(DEVICE, dtype)
    b = None if b64 is None else b64.to(DEVICE, dtype)
    before = (x.clone(), w.clone())
    got = gemv_mod._gemv(x, w, b)
    assert torch.equal(x, before[0]) and torch.equal(w, before[1])  # inputs not modified
    assert got.shape == (1, 1, N) and got.dtype == dtype
    base = F.linear(x.float(), w.float(), None if b is None else b.float()).to(dtype)  # rounded like ours
    err, ref = rel_err(got.cpu(), truth), rel_err(base.cpu(), truth)
    assert err <= 2 * ref + 1e-6, f"error {err:.3e} vs F.linear {ref:.3e}"


def test_gemv_float32_matches_float64_closely():
    """Float32 in and out: the error is rounding only, so a wrong index (a row or column off) fails this."""
    x64, w64 = torch.randn(1, 77, dtype=torch.float64), torch.randn(45, 77, dtype=torch.float64)
    got = gemv_mod._gemv(x64.float().to(DEVICE), w64.float().to(DEVICE), None)
    assert rel_err(got.cpu(), F.linear(x64, w64)) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gemv_streams_columns_past_the_first_tile(dtype, monkeypatch):
    """K beyond the first register tile (FIRST_K, lowered here so the interpreter reaches the loop: 200 columns =
    64 + 1024-wide remainder, masked): against float64 and F.linear in the same dtype."""
    monkeypatch.setattr(gemv_mod, "FIRST_K", 64)
    N, K = 23, 200
    g = torch.Generator().manual_seed(7)
    x64 = torch.randn(1, K, generator=g, dtype=torch.float64)
    w64 = torch.randn(N, K, generator=g, dtype=torch.float64) / K**0.5
    b64 = torch.randn(N, generator=g, dtype=torch.float64)
    truth = F.linear(x64, w64, b64)
    x, w, b = x64.to(DEVICE, dtype), w64.to(DEVICE, dtype), b64.to(DEVICE, dtype)
    got = gemv_mod._gemv(x, w, b)
    base = F.linear(x.float(), w.float(), b.float()).to(dtype)
    err, ref = rel_err(got.cpu(), truth), rel_err(base.cpu(), truth)
    assert got.shape == (1, N) and err <= 2 * ref + 1e-6, f"error {err:.3e} vs F.linear {ref:.3e}"
    with pytest.raises(ValueError, match="needs"):
        gemv_mod._gemv(x[:, :K - 1], w, b)


def test_gemv_applies_only_to_one_token_without_autograd_on_a_pdl_gpu(monkeypatch):
    w = torch.randn(16, 32, dtype=torch.float16)
    assert not gemv_mod.gemv_applies(torch.randn(1, 32, dtype=torch.float16), w)  # CPU tensors: never
    monkeypatch.setattr(gemv_mod, "use_pdl", lambda device: True)  # the rule, as on a Hopper GPU
    x = torch.randn(1, 1, 32, dtype=torch.float16)
    with torch.no_grad():
        assert gemv_mod.gemv_applies(x, w)
        assert not gemv_mod.gemv_applies(torch.randn(2, 1, 32, dtype=torch.float16), w)  # two rows: cuBLAS
        assert not gemv_mod.gemv_applies(x.float(), w)  # dtypes differ
        assert not gemv_mod.gemv_applies(x, w.t().contiguous().t())  # strided weight
        assert not gemv_mod.gemv_applies(torch.randn(1, 5000, dtype=torch.float16),
                                         torch.randn(4, 5000, dtype=torch.float16))  # K > MAX_K
    assert not gemv_mod.gemv_applies(x, w)  # autograd on


@pytest.mark.gpu
@pytest.mark.parametrize("N, K", [(2048, 2048), (6400, 2048), (11264, 2048), (300, 4096)])
def test_gemv_on_gpu_matches_linear_in_bf16(N, K):
    """With programmatic dependent launch on (Hopper): bf16, the decode step's shapes, after a kernel that writes
    x (the wait must hold: x is read after it)."""
    torch.manual_seed(0)
    w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) / K**0.5
    src = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
    truth = F.linear(src.double(), w.double())
    with torch.no_grad():
        for _ in range(3):
            x = src * 1.0  # written by the kernel just before
            got = gemv_mod.gemv(x, w)
            base = F.linear(x, w)
            assert rel_err(got.cpu(), truth.cpu()) <= 2 * rel_err(base.cpu(), truth.cpu()) + 1e-6
