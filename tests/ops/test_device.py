"""gsa.ops.device: the entry points make their inputs' CUDA device current (Triton launches on the current device
and its stream, wherever the pointers live). On the CPU: the context's choice with stand-ins, and that the op, the
layer and the model go through it; on two GPUs: the op on cuda:1 while cuda:0 is current equals the op on cuda:0."""

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


def test_op_layer_and_model_run_under_their_inputs_device(monkeypatch):
    from gsa.models import GSAConfig, GSAForCausalLM
    from gsa.nn import GatedSlotAttention

    seen = []
    real = device.on_device_of

    def record(x):
        seen.append(tuple(x.shape))
        return real(x)

    monkeypatch.setattr(api, "on_device_of", record)  # the op's
    monkeypatch.setattr(device, "on_device_of", record)  # the decorated forwards'
    x = make_inputs(B=1, T=5, HQ=2, H=2, K=8, V=8, M=4, dtype=torch.float32)
    gated_slot_attention(x["q"], x["k"], x["v"], x["s"], x["g"])
    assert seen == [(1, 5, 2, 8)]
    layer = GatedSlotAttention(hidden_size=32, num_heads=2, num_slots=4)
    seen.clear()
    layer(torch.randn(1, 5, 32))
    assert seen[0] == (1, 5, 32)  # the layer's input, then its op's q
    model = GSAForCausalLM(GSAConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_heads=2, num_slots=4))
    seen.clear()
    model(input_ids=torch.tensor([[1, 2, 3]]))  # by keyword, as generate() passes it
    assert seen[0] == (1, 3)


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
