"""The Triton RMSNorm (gsa.ops.triton.norm) and SwiGLU (gsa.ops.triton.swiglu) against float64 and against PyTorch
in the same dtype: outputs and every gradient, at awkward sizes (interpreter on the CPU)."""

import pytest
import torch
import torch.nn.functional as F

import gsa.nn.backend as backend
import gsa.nn.norm as norm_mod
from gsa.nn import RMSNorm
from op_inputs import rel_err

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def definition(x, w, eps, swish):
    xin = F.silu(x) if swish else x
    return xin / torch.sqrt(xin.pow(2).mean(-1, keepdim=True) + eps) * w


def run(kernels, x, w, dy, swish, monkeypatch):
    monkeypatch.setattr(backend, "KERNELS", kernels)
    x = x.detach().clone().requires_grad_(True)
    w = w.detach().clone().requires_grad_(True)
    y = norm_mod.rms_norm(x, w, 1e-5, swish)
    dx, dw = torch.autograd.grad(y, (x, w), dy)
    return y, dx, dw


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("swish", [False, True])
@pytest.mark.parametrize("shape", [(37, 40), (2, 7, 100), (1, 1, 16)])
def test_triton_rms_norm_within_2x_of_the_torch_node(dtype, swish, shape, monkeypatch):
    x64 = torch.randn(shape, dtype=torch.float64) * 2
    w64 = torch.rand(shape[-1], dtype=torch.float64) + 0.5
    dy64 = torch.randn(shape, dtype=torch.float64)
    xw = x64.detach().requires_grad_(True), w64.detach().requires_grad_(True)
    truth = (definition(*xw, 1e-5, swish), *torch.autograd.grad(definition(*xw, 1e-5, swish), xw, dy64))
    x, dy = x64.to(dtype).to(DEVICE), dy64.to(dtype).to(DEVICE)
    w = w64.float().to(DEVICE)  # float32 weights, half activations: the autocast training setting
    x_before = x.clone()
    got = run("triton", x, w, dy, swish, monkeypatch)
    base = run("torch", x, w, dy, swish, monkeypatch)
    assert torch.equal(x, x_before)  # inputs not modified
    for name, a, b, t in zip(("y", "dx", "dw"), got, base, truth):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.isfinite(a).all(), name
        err, ref = rel_err(a.cpu(), t), rel_err(b.cpu(), t)
        assert err <= 2 * ref + 1e-6, f"{name}: error {err:.3e} vs torch node {ref:.3e}"


def test_triton_rms_norm_float32_matches_float64_closely(monkeypatch):
    """In float32 the kernels' error is rounding only: a wrong formula (say, dw without the swish) fails this."""
    x64, w64, dy64 = torch.randn(19, 72, dtype=torch.float64), torch.rand(72, dtype=torch.float64) + 0.5, \
        torch.randn(19, 72, dtype=torch.float64)
    xw = x64.detach().requires_grad_(True), w64.detach().requires_grad_(True)
    want = definition(*xw, 1e-5, True)
    truth = (want, *torch.autograd.grad(want, xw, dy64))
    got = run("triton", x64.float().to(DEVICE), w64.float().to(DEVICE), dy64.float().to(DEVICE), True, monkeypatch)
    for name, a, t in zip(("y", "dx", "dw"), got, truth):
        assert rel_err(a.cpu(), t) < 1e-5, name


def test_the_module_runs_the_kernels_when_asked(monkeypatch):
    calls = []
    import gsa.ops.triton.norm as kernels

    real = kernels.rms_norm_triton
    monkeypatch.setattr(kernels, "rms_norm_triton", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(backend, "KERNELS", "triton")
    RMSNorm(16).to(DEVICE)(torch.randn(3, 16, device=DEVICE))
    monkeypatch.setattr(backend, "KERNELS", "auto")
    RMSNorm(16)(torch.randn(3, 16))  # a CPU tensor: the torch node
    assert calls == [1]


def test_opcheck_rms_norm_ops():
    from gsa.ops.triton.norm import rms_norm_fwd

    x = torch.randn(5, 24, device=DEVICE, requires_grad=True)
    w = torch.rand(24, device=DEVICE, requires_grad=True)
    torch.library.opcheck(rms_norm_fwd, (x, w, 1e-5, True))


def test_bad_weight_is_refused_before_any_kernel():
    from gsa.ops.triton.norm import rms_norm_triton

    with pytest.raises(ValueError, match="weight must be"):
        rms_norm_triton(torch.randn(3, 8, device=DEVICE), torch.ones(7, device=DEVICE), 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_swiglu_within_2x_of_pytorch(dtype, monkeypatch):
    """silu(gate) * up and both gradients, through SwiGLU with the kernels forced on, against float64."""
    from gsa.nn import SwiGLU

    mlp = SwiGLU(24, 37).double()
    x64 = torch.randn(3, 5, 24, dtype=torch.float64)
    dy64 = torch.randn(3, 5, 24, dtype=torch.float64)

    def grads(kernels, dtype):
        monkeypatch.setattr(backend, "KERNELS", kernels)
        m = SwiGLU(24, 37).to(DEVICE)
        m.load_state_dict(mlp.state_dict())
        m = m.to(dtype)
        x = x64.to(dtype).to(DEVICE).requires_grad_(True)
        y = m(x)
        return [y, *torch.autograd.grad(y, (x, *m.parameters()), dy64.to(dtype).to(DEVICE))]

    truth = grads("torch", torch.float64)
    got, base = grads("triton", dtype), grads("torch", dtype)
    for i, (a, b, t) in enumerate(zip(got, base, truth)):
        assert a.dtype == b.dtype and torch.isfinite(a).all(), i
        err, ref = rel_err(a.cpu(), t.cpu()), rel_err(b.cpu(), t.cpu())
        assert err <= 2 * ref + 1e-6, f"output {i}: error {err:.3e} vs PyTorch {ref:.3e}"
    if dtype == torch.float32:  # rounding only: a wrong derivative fails this
        assert all(rel_err(a.cpu(), t.cpu()) < 1e-5 for a, t in zip(got, truth))


def test_swiglu_kernel_is_what_the_module_runs(monkeypatch):
    import gsa.ops.triton.swiglu as kernels
    from gsa.nn import SwiGLU

    calls = []
    real = kernels.swiglu_triton
    monkeypatch.setattr(kernels, "swiglu_triton", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(backend, "KERNELS", "triton")
    SwiGLU(8, 16).to(DEVICE)(torch.randn(2, 8, device=DEVICE))
    monkeypatch.setattr(backend, "KERNELS", "torch")
    SwiGLU(8, 16).to(DEVICE)(torch.randn(2, 8, device=DEVICE))
    assert calls == [1]


def test_opcheck_swiglu_op():
    from gsa.ops.triton.swiglu import swiglu_fwd

    g = torch.randn(4, 33, device=DEVICE, requires_grad=True)
    u = torch.randn(4, 33, device=DEVICE, requires_grad=True)
    torch.library.opcheck(swiglu_fwd, (g, u))


def test_forced_kernels_refuse_a_tensor_they_cannot_run_on(monkeypatch):
    """KERNELS = 'triton' with a CPU activation outside the interpreter: a ValueError naming the setting, not
    Triton's launcher failing on a host pointer (which a CPU float64 reference beside a GPU run once hit)."""
    import gsa.ops.api as api

    monkeypatch.setattr(backend, "KERNELS", "triton")
    monkeypatch.setattr(api, "triton_runs_on", lambda device: device.type == "cuda")
    with pytest.raises(ValueError, match="KERNELS = 'triton' runs the modules' kernels on CUDA tensors"):
        RMSNorm(16)(torch.randn(3, 16))
