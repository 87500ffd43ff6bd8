"""Bad input raises a clear error naming the argument, before any backend runs."""

import pytest
import torch

from gsa.ops import gated_slot_attention
from skips import NO_TRITON


def args(B=1, T=5, HQ=4, H=2, K=6, V=5, M=3, dtype=torch.float32):
    return dict(
        q=torch.randn(B, T, HQ, K, dtype=dtype), k=torch.randn(B, T, H, K, dtype=dtype),
        v=torch.randn(B, T, H, V, dtype=dtype), s=torch.rand(B, T, H, M, dtype=dtype),
        g=-torch.rand(B, T, H, M, dtype=dtype),
    )


def call(**over):
    a = args()
    kw = {n: over.pop(n) for n in list(over) if n not in a}
    a.update(over)
    return gated_slot_attention(a.pop("q"), a.pop("k"), a.pop("v"), a.pop("s"), a.pop("g"), **kw)


CASES = [
    (dict(q=torch.randn(5, 4, 6)), ValueError, r"q must be 4-D \[B, T, HQ, K\], got shape \(5, 4, 6\)"),
    (dict(k=torch.randn(1, 5, 2, 7)), ValueError, r"k must have shape \[B, T, H, K\] = \(1, 5, 2, 6\), got \(1, 5, 2, 7\)"),
    (dict(v=torch.randn(1, 4, 2, 5)), ValueError, r"v must have shape"),
    (dict(s=torch.randn(2, 5, 2, 3)), ValueError, r"s must have shape"),
    (dict(g=torch.randn(1, 5, 2, 4)), ValueError, r"g must have shape \[B, T, H, M\] = \(1, 5, 2, 3\)"),
    (dict(q=torch.randn(1, 5, 3, 6)), ValueError, r"HQ = 3 must be a multiple of the kv head count H = 2"),
    (dict(q=torch.randn(1, 5, 4, 6, dtype=torch.float64)), TypeError, r"k must have q's dtype torch.float64"),
    (dict(q=torch.randint(0, 3, (1, 5, 4, 6))), TypeError, r"q must be float16, bfloat16, float32 or float64"),
    (dict(k=[1, 2]), TypeError, r"k must be a torch.Tensor"),
    (dict(scale="1"), TypeError, r"scale must be a positive finite float"),
    (dict(scale=float("nan")), ValueError, r"scale must be a positive finite float or None .*got nan"),
    (dict(scale=0.0), ValueError, r"scale must be a positive finite float or None .*got 0.0"),
    (dict(scale=-1), ValueError, r"scale must be a positive finite float or None .*got -1"),
    (dict(output_final_state=1), TypeError, r"output_final_state must be a bool"),
    (dict(backend="cuda"), ValueError, r"backend must be one of"),
    (dict(cu_seqlens=[0, 5]), TypeError, r"cu_seqlens must be a 1-D integer torch.Tensor"),
    (dict(cu_seqlens=torch.tensor([0.0, 5.0])), TypeError, r"cu_seqlens must be int32 or int64"),
    (dict(cu_seqlens=torch.tensor([0, 3, 2, 5])), ValueError, r"strictly increasing.*cu_seqlens\[1\] = 3"),
    (dict(cu_seqlens=torch.tensor([0, 3, 3, 5])), ValueError, r"strictly increasing"),
    (dict(cu_seqlens=torch.tensor([0, 4])), ValueError, r"end at T = 5"),
    (dict(cu_seqlens=torch.tensor([1, 5])), ValueError, r"start at 0"),
    (dict(cu_seqlens=torch.tensor([[0, 5]])), ValueError, r"cu_seqlens must be 1-D"),
    (dict(initial_state=torch.zeros(1, 2, 6, 3)), TypeError, r"initial_state must be a pair"),
    (dict(initial_state=(torch.zeros(1, 2, 3, 6), torch.zeros(1, 2, 3, 5))), ValueError,
     r"initial_state\[0\] \(hk\) must have shape \[N, H, K, M\] = \(1, 2, 6, 3\), got \(1, 2, 3, 6\)"),
    (dict(initial_state=(torch.zeros(1, 2, 6, 3), torch.zeros(1, 2, 5, 3))), ValueError, r"initial_state\[1\] \(hv\)"),
    (dict(initial_state=(torch.zeros(1, 2, 6, 3, dtype=torch.float16), torch.zeros(1, 2, 3, 5))), TypeError,
     r"must be float32"),
    (dict(initial_state=(torch.zeros(1, 2, 6, 3, dtype=torch.float64), torch.zeros(1, 2, 3, 5))), TypeError,
     r"must be float32"),
]


@pytest.mark.parametrize("over,exc,match", CASES)
def test_bad_input_raises(over, exc, match):
    with pytest.raises(exc, match=match):
        call(**over)


def test_cu_seqlens_needs_batch_one():
    a = args(B=2)
    with pytest.raises(ValueError, match=r"B == 1, got B = 2"):
        gated_slot_attention(**a, cu_seqlens=torch.tensor([0, 5]))


def test_initial_state_rows_follow_cu_seqlens():
    a = args(T=5)
    bad = (torch.zeros(1, 2, 6, 3), torch.zeros(1, 2, 3, 5))
    with pytest.raises(ValueError, match=r"\(2, 2, 6, 3\)"):
        gated_slot_attention(**a, cu_seqlens=torch.tensor([0, 2, 5]), initial_state=bad)


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_good_input_passes_every_backend_that_runs_on_cpu(backend):
    o, st = call(backend=backend, output_final_state=True)
    assert o.shape == (1, 5, 4, 5) and st[0].shape == (1, 2, 6, 3) and st[1].shape == (1, 2, 3, 5)


@pytest.mark.parametrize("name", ["inplace_state", "keep_states"])
def test_flags_must_be_bool(name):
    with pytest.raises(TypeError, match=rf"{name} must be a bool( or None)?, got int"):
        call(**{name: 1})


def test_auto_backend_choice(monkeypatch):
    import gsa.ops.api as api

    assert api.resolve_backend("auto", torch.device("cpu")) == "torch"
    monkeypatch.setattr(api, "_triton_available", lambda: True)
    monkeypatch.setattr(api, "_triton_backend", lambda: None)
    assert api.resolve_backend("auto", torch.device("cuda"), torch.bfloat16) == "triton"
    assert api.resolve_backend("auto", torch.device("cuda"), torch.float64) == "torch"  # the kernels' types stop at fp32
    monkeypatch.setattr(api, "_triton_available", lambda: False)
    assert api.resolve_backend("auto", torch.device("cuda"), torch.bfloat16) == "torch"
    assert api.resolve_backend("reference", torch.device("cuda")) == "reference"


def test_triton_backend_refuses_float64():
    a = args(dtype=torch.float64)
    with pytest.raises(TypeError, match="backend='triton' takes float16, bfloat16 or float32"):
        gated_slot_attention(**a, backend="triton")


def test_more_slots_than_the_triton_kernels_hold(monkeypatch):
    """The Triton kernels hold a chunk's slots in one tile of at most 128: run with M = 129 they read only the first
    128 (2e-3 off the float64 reference, silently). So backend='triton' refuses it, 'auto' on a GPU takes the torch
    backend (checked here through the backend choice), and the triton entry points refuse it too."""
    from gsa.ops import api
    from gsa.ops.validation import TRITON_MAX_SLOTS

    a = args(M=TRITON_MAX_SLOTS + 1)
    with pytest.raises(ValueError, match=r"backend='triton' takes at most 128 slots .* got M = 129"):
        gated_slot_attention(*a.values(), backend="triton")
    # as on a GPU: auto resolves to triton
    monkeypatch.setattr(api, "resolve_backend",
                        lambda backend, device, dtype: "triton" if backend == "auto" else backend)
    assert api._backend_for("auto", a["q"], TRITON_MAX_SLOTS + 1) == "torch"
    assert api._backend_for("auto", a["q"], TRITON_MAX_SLOTS) == "triton"
    pytest.importorskip("triton", reason=NO_TRITON)
    from gsa.ops.triton import chunk_gsa, fused_recurrent_gsa

    with pytest.raises(ValueError, match="at most 128 slots"):
        chunk_gsa(a["q"], a["k"], a["v"], a["s"], a["g"], 0.5, None, False, None)
    with pytest.raises(ValueError, match="at most 128 slots"):
        fused_recurrent_gsa(a["q"], a["k"], a["v"], a["s"], a["g"], 0.5)


def _step_args(B=1, T=1, HQ=4, H=2, K=6, V=5, M=3):
    return (torch.randn(B, T, HQ, K), torch.randn(B, T, H, K), torch.randn(B, T, H, V), torch.randn(B, T, H, M),
            (torch.zeros(B, H, K, M), torch.zeros(B, H, M, V)))


@pytest.mark.parametrize("change, exc, match", [
    (lambda a: a.__setitem__(3, torch.randn(1, 1, 2, 5)), ValueError,
     r"state\[0\] \(hk\) must have shape \[N, H, K, M\] = \(1, 2, 6, 5\), got \(1, 2, 6, 3\)"),
    (lambda a: a.__setitem__(3, torch.randn(1, 1, 3, 3)), ValueError, r"f must have shape \[B, T, H, M\]"),
    (lambda a: a.__setitem__(3, a[3].half()), TypeError, r"f must have q's dtype torch.float32"),
    (lambda a: a.__setitem__(4, (a[4][0].half(), a[4][1])), TypeError, r"state\[0\] \(hk\) must be float32"),
    (lambda a: a.__setitem__(4, a[4][0]), TypeError, r"state must be a pair"),
])
def test_step_names_its_own_arguments(change, exc, match):
    """gated_slot_attention_step's f and state are named as such (they had been checked as the op's s and
    initial_state: a wrong slot count in f was reported as a wrong hk)."""
    from gsa.ops import gated_slot_attention_step

    a = list(_step_args())
    change(a)
    with pytest.raises(exc, match=match):
        gated_slot_attention_step(*a[:4], a[4], backend="torch")


@pytest.mark.parametrize("tau", [0, -1.0, float("nan"), float("inf"), "8", True])
def test_gate_logit_normalizer_must_be_positive_and_finite(tau):
    """slot_gates and the step refuse a normalizer that is not a positive finite number: 0 had made every gate -inf
    (a full reset each token), -1 gates above 1 (g up to 1.07), NaN NaN gates; "8" a raw comparison error."""
    from gsa.ops import gated_slot_attention_step, slot_gates

    with pytest.raises(ValueError, match="gate_logit_normalizer must be a positive finite number"):
        slot_gates(torch.randn(2, 3), tau)
    with pytest.raises(ValueError, match="gate_logit_normalizer must be a positive finite number"):
        gated_slot_attention_step(*_step_args(), gate_logit_normalizer=tau, backend="torch")


class _CudaOffsets:
    """Stands in for a CUDA cu_seqlens: counts the host reads (each a device sync on a GPU)."""

    is_cuda = True

    def __init__(self, values):
        self.values, self._version, self.reads = list(values), 0, 0

    def tolist(self):
        self.reads += 1
        return list(self.values)


def test_host_offsets_reads_an_unmodified_cuda_tensor_once():
    from gsa.ops.validation import host_offsets

    cu = _CudaOffsets([0, 3, 5])
    first = host_offsets(cu)
    first.append(99)  # each caller's own list
    assert [host_offsets(cu) for _ in range(3)] == [[0, 3, 5]] * 3 and cu.reads == 1
    cu.values[1], cu._version = 4, cu._version + 1  # an in-place write bumps the version counter
    assert host_offsets(cu) == [0, 4, 5] and cu.reads == 2
    other = _CudaOffsets([0, 4, 5])  # another tensor with the same values: read, not assumed
    assert host_offsets(other) == [0, 4, 5] and other.reads == 1
    assert host_offsets(cu) == [0, 4, 5] and cu.reads == 3  # only the last tensor read is remembered


def test_host_offsets_are_read_during_a_cuda_graph_capture(monkeypatch):
    """Inside a capture the read happens (and fails loudly on a real GPU) rather than baking remembered offsets
    into a graph whose replays would never re-read them."""
    from gsa.ops.validation import host_offsets

    cu = _CudaOffsets([0, 3, 5])
    host_offsets(cu)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert host_offsets(cu) == [0, 3, 5] and host_offsets(cu) == [0, 3, 5] and cu.reads == 3


def test_host_offsets_reads_a_host_tensor_every_time(monkeypatch):
    from gsa.ops.validation import host_offsets

    reads = []
    tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: reads.append(1) or tolist(self))
    cu = torch.tensor([0, 2, 5])
    assert host_offsets(cu) == [0, 2, 5] and host_offsets(cu) == [0, 2, 5] and len(reads) == 2
    cu.numpy()[1] = 3  # a write torch's version counter does not see: why host tensors are never remembered
    assert host_offsets(cu) == [0, 3, 5]


@pytest.mark.gpu
def test_packed_layers_read_cu_seqlens_once_a_step(monkeypatch):
    """Two op calls on one CUDA cu_seqlens (two layers of a packed step), forward and backward: one host read (one
    sync) instead of one in each layer's checks, forward and backward launchers."""
    reads = []
    tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: reads.append(self.is_cuda) or tolist(self))
    a = {n: x.cuda().requires_grad_() for n, x in args(T=130).items()}
    cu = torch.tensor([0, 64, 100, 130], device="cuda")
    o = gated_slot_attention(**a, cu_seqlens=cu, backend="triton")[0]
    o = gated_slot_attention(a["q"] * o.sum(-1, keepdim=True).sigmoid(), a["k"], a["v"], a["s"], a["g"],
                             cu_seqlens=cu, backend="triton")[0]
    o.sum().backward()
    assert reads == [True]
