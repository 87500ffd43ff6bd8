"""gsa.ops.device: every place that hands tensors to Triton kernels makes their CUDA device current (Triton launches
on the current device and its stream, wherever the pointers live). On the CPU: the context's choice with stand-ins,
and that the op and gsa.nn's Triton branches (RMSNorm, SwiGLU's product, the decode GEMV) go through it; on two GPUs:
the op on cuda:1 while cuda:0 is current equals the op on cuda:0."""

import types

import pytest
import torch

import gsa.ops.api as api
import gsa.ops.device as device
from gsa.ops import gated_slot_attention
from op_inputs import make_inputs


class Recorded:
    """A stand-in for torch.cuda.device: records the device it was entered for."""

    entered = []

    def __init__(self, d):
        self.d = d

    def __enter__(self):
        Recorded.entered.append(self.d)

    def __exit__(self, *exc):
        return False


def fake_cuda_tensor(index):
    return types.SimpleNamespace(is_cuda=True, get_device=lambda: index, device=f"cuda:{index}")


def test_the_inputs_device_is_made_current_only_when_it_is_not(monkeypatch):
    Recorded.entered = []
    monkeypatch.setattr(device.torch.cuda, "device", Recorded)
    monkeypatch.setattr(device.torch.cuda, "current_device", lambda: 0)
    with device.on_device_of(fake_cuda_tensor(1)):
        pass
    with device.on_device_of(fake_cuda_tensor(0)):  # already current
        pass
    with device.on_device_of(torch.zeros(1)):  # a CPU tensor
        pass
    assert Recorded.entered == ["cuda:1"]


def test_op_and_the_nn_triton_branches_run_under_their_inputs_device(monkeypatch):
    """The op on the CPU, and gsa.nn's three Triton branches with their kernels stubbed (on a CPU they are not
    taken): each enters on_device_of with the tensor it hands on."""
    import gsa.nn.fused as fused
    import gsa.nn.mlp as mlp
    import gsa.nn.norm as norm
    import gsa.ops.triton.gemv as gemv
    import gsa.ops.triton.norm as triton_norm
    import gsa.ops.triton.swiglu as swiglu

    seen = []

    def record(x):
        seen.append(tuple(x.shape))
        return device.on_device_of(x)

    x = make_inputs(B=1, T=5, HQ=2, H=2, K=8, V=8, M=4, dtype=torch.float32)
    monkeypatch.setattr(api, "on_device_of", record)
    gated_slot_attention(x["q"], x["k"], x["v"], x["s"], x["g"])
    assert seen == [(1, 5, 2, 8)]

    seen.clear()
    for module in (norm, mlp, fused):
        monkeypatch.setattr(module, "on_device_of", lambda t: record(torch.empty(t.shape)))
    monkeypatch.setattr(norm, "_use_triton", lambda t: True)
    monkeypatch.setattr(triton_norm, "rms_norm_triton", lambda t, w, eps, silu: t)
    norm.rms_norm(torch.ones(3, 6), torch.ones(6), 1e-5)
    monkeypatch.setattr(mlp, "use_triton_kernels", lambda t: True)
    monkeypatch.setattr(swiglu, "swiglu_triton", lambda g, u: g * u)
    mlp.gated_product(torch.ones(2, 7), torch.ones(2, 7))

    class OnGPU(torch.Tensor):  # a CPU tensor that says it is on a GPU, for decode_linear's test
        is_cuda = True

    monkeypatch.setattr(fused, "_decode_gemv_roles", lambda: {"o"})
    monkeypatch.setattr(gemv, "gemv_applies", lambda t, w: True)
    monkeypatch.setattr(gemv, "gemv", lambda t, w, b: t @ w.T)
    fused.decode_linear(torch.ones(1, 5).as_subclass(OnGPU), torch.ones(4, 5), None, "o")
    assert seen == [(3, 6), (2, 7), (1, 5)]


@pytest.mark.gpu
def test_gpu_op_on_a_device_that_is_not_current():
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 CUDA devices, found {torch.cuda.device_count()}")
    x = make_inputs(B=2, T=130, HQ=4, H=2, K=64, V=64, M=32, dtype=torch.bfloat16)
    outs = []
    for d in ("cuda:0", "cuda:1"):
        with torch.cuda.device(0):
            y = {n: t.detach().to(d) if t is not None else None for n, t in x.items()}
            o, st = gated_slot_attention(y["q"], y["k"], y["v"], y["s"], y["g"], initial_state=(y["hk0"], y["hv0"]),
                                         output_final_state=True, backend="triton")
            torch.cuda.synchronize(d)
        assert o.device == torch.device(d)
        outs.append((o.cpu(), st[0].cpu(), st[1].cpu()))
    for a, b in zip(*outs):
        assert torch.equal(a, b)
