"""SETTINGS.direct_launch (gsa.ops.triton.direct): a launch whose key was seen before goes straight to the compiled
kernel's launcher. The key must be at least as fine as Triton's specialization (else a kernel compiled for aligned
pointers, or for an argument equal to 1, would run on inputs it was not compiled for: a silent wrong answer), and
the arguments must reach the launcher in signature order, defaults and constexprs included."""

import inspect

import pytest
import torch

from skips import NO_TRITON

pytest.importorskip("triton", reason=NO_TRITON)

import gsa.ops.triton.direct as direct  # noqa: E402
from gsa.ops.triton import SETTINGS, chunk_gsa  # noqa: E402
from op_inputs import cast, flatten, make_inputs, on, run  # noqa: E402


class _Param:
    def __init__(self, name, constexpr=False, default=None, has_default=False):
        self.name, self.is_constexpr, self.default, self.has_default = name, constexpr, default, has_default


class _Compiled:
    def __init__(self, log):
        self.log, self.function, self.packed_metadata = log, "fn", "meta"

    def run(self, *args):
        self.log.append(("direct", args))


class _Kernel:
    """A stand-in for a JITFunction: kernel(x, n, scale, BLOCK: constexpr, FLAG: constexpr = False)."""

    params = [_Param("x"), _Param("n"), _Param("scale"), _Param("BLOCK", True),
              _Param("FLAG", True, False, True)]

    def __init__(self):
        self.log = []

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.log.append(("jit", grid, args, kwargs))
            return _Compiled(self.log)
        return run


class _Driver:
    class active:  # noqa: N801 (as triton.runtime.driver.driver.active)
        get_current_device = staticmethod(lambda: 0)
        get_current_stream = staticmethod(lambda device: 1234)


@pytest.fixture
def kernel(monkeypatch):
    monkeypatch.setattr(direct, "driver", _Driver)
    monkeypatch.setattr(direct, "_compiled", {})
    return _Kernel()


def test_arg_key_is_as_fine_as_triton_specialization():
    buf = torch.zeros(64, dtype=torch.float16)
    assert direct.arg_key(buf, False) != direct.arg_key(buf[1:], False)  # 16-byte aligned or not
    assert direct.arg_key(buf, False) != direct.arg_key(buf.float(), False)
    ints = [1, 2, 16, 32, 17, 2**31, 2**40]
    keys = [direct.arg_key(i, False) for i in ints]
    assert keys[0] != keys[1] and keys[2] == keys[3] and keys[2] != keys[4] and keys[5] != keys[2]
    assert direct.arg_key(64, True) != direct.arg_key(128, True)  # constexprs by value
    assert direct.arg_key(None, False) is None and direct.arg_key(True, False) is True
    assert direct.arg_key(0.5, False) == direct.arg_key(2.0, False)  # floats are not specialized


def test_runtime_key_inlines_arg_key():
    """launch_direct keys plain tensors and ints inline (_runtime_key); every value keys as arg_key keys it."""
    buf = torch.zeros(64, dtype=torch.float16)
    values = [buf, buf[1:], buf.float(), torch.nn.Parameter(buf.clone()), None, True, False, "s", 0.5, 1, 2, 16,
              17, -16, 2**31 - 1, 2**31, -(2**31) - 1, 2**40]
    at = tuple(range(len(values)))
    assert direct._runtime_key(values, at) == tuple(direct.arg_key(v, False) for v in values)
    assert direct._runtime_key(values, (3, 1)) == (direct.arg_key(values[3], False), direct.arg_key(buf[1:], False))


def test_second_launch_goes_to_the_launcher_in_signature_order(kernel):
    x = torch.zeros(32)
    direct.launch_direct(kernel, (3, 2), (x, 48), dict(scale=0.5, BLOCK=64, num_warps=4))
    assert kernel.log[-1][0] == "jit"
    direct.launch_direct(kernel, (3, 2), (x, 64), dict(scale=0.25, BLOCK=64, num_warps=4))
    kind, args = kernel.log[-1]
    assert kind == "direct"
    assert args[:7] == (3, 2, 1, 1234, "fn", "meta", None) and args[7:9] == (None, None)
    assert args[9] is x and args[10:] == (64, 0.25, 64, False)  # the default of FLAG filled in


def _signature_of(fn):
    """A JITFunction-like view of a kernel function's parameters (the CPU tests run kernels interpreted, whose
    objects have no `params`): constexpr where annotated so."""
    params = [_Param(p.name, "constexpr" in str(p.annotation), p.default, p.default is not inspect.Parameter.empty)
              for p in inspect.signature(fn).parameters.values()]
    return type("KernelView", (), {"params": params, "fn": fn})()


def test_real_kernels_get_every_argument_in_signature_order(monkeypatch):
    """Every launch of fwd+bwds at three shapes (with and without final states), recorded, then replayed through
    launch_direct with the compiled kernel faked: the launcher receives, for each parameter of the real kernel's
    signature, the positional argument, the keyword or the default, in signature order."""
    import gsa.ops.triton.launch as launch

    seen = []

    class _Recorder:
        function = packed_metadata = None

        def run(self, *args):
            seen.append(args[9:])

    class _AlwaysCompiled(dict):
        def get(self, key, default=None):
            return _Recorder()

    monkeypatch.setattr(direct, "driver", _Driver)
    monkeypatch.setattr(direct, "_compiled", _AlwaysCompiled())
    n = 0
    for B, T, H, D, M, fin in [(2, 300, 4, 64, 32, False), (1, 130, 2, 128, 16, True), (1, 70, 1, 32, 64, True)]:
        x = cast(make_inputs(B=B, T=T, HQ=H, H=H, K=D, V=D, M=M, tau=1.0), torch.float16)
        with launch.compile_in_parallel(workers=1) as jobs:  # queued: nothing compiles or runs
            o, _ = chunk_gsa(x["q"], x["k"], x["v"], x["s"], x["g"], 0.3, None, fin, None)
            recorded = list(jobs)
            jobs.clear()
        for kernel, grid, args, kwargs in recorded:
            view = _signature_of(kernel.fn)
            expected = [*args, *(kwargs[p.name] if p.name in kwargs else p.default for p in view.params[len(args):])]
            direct.launch_direct(view, grid, args, kwargs)
            assert len(seen[-1]) == len(expected), kernel.fn.__name__
            assert all(a is b for a, b in zip(seen[-1], expected)), kernel.fn.__name__
            n += 1
    assert n >= 12


@pytest.mark.parametrize("change", ["misaligned", "int_one", "constexpr", "option", "dtype"])
def test_a_launch_that_triton_would_specialize_differently_is_a_miss(kernel, change):
    x = torch.zeros(64, dtype=torch.float16)
    base = dict(args=(x, 48), kwargs=dict(scale=0.5, BLOCK=64, num_warps=4))
    direct.launch_direct(kernel, (1,), base["args"], base["kwargs"])
    args, kwargs = base["args"], dict(base["kwargs"])
    if change == "misaligned":
        args = (x[1:], 48)
    elif change == "int_one":
        args = (x, 1)
    elif change == "constexpr":
        kwargs["BLOCK"] = 128
    elif change == "option":
        kwargs["num_warps"] = 8
    else:
        args = (x.float(), 48)
    direct.launch_direct(kernel, (1,), args, kwargs)
    assert kernel.log[-1][0] == "jit"


def test_launch_hooks_take_the_normal_path(kernel, monkeypatch):
    x = torch.zeros(32)
    direct.launch_direct(kernel, (1,), (x, 48), dict(scale=0.5, BLOCK=64))
    chain = direct.knobs.runtime.launch_enter_hook
    if hasattr(chain, "add"):  # Triton 3.6+: a HookChain, empty unless a profiler added to it
        monkeypatch.setattr(chain, "calls", [lambda *a: None])
    else:
        monkeypatch.setattr(direct.knobs.runtime, "launch_enter_hook", lambda *a: None)
    direct.launch_direct(kernel, (1,), (x, 48), dict(scale=0.5, BLOCK=64))
    assert kernel.log[-1][0] == "jit"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_direct_launch_is_bitwise_the_normal_launch(dtype):
    """Repeated calls (the later ones through the launcher) and inputs at a misaligned offset after aligned ones (a
    new specialization): bitwise the results of the normal launch path."""
    x = on(cast(make_inputs(B=2, T=64 * 3 + 7, HQ=4, H=2, K=80, V=72, M=24, tau=1.0), dtype))

    def chunk_op(q, k, v, s, g, *, initial_state=None, output_final_state=False):
        return chunk_gsa(q, k, v, s, g, 0.3, initial_state, output_final_state, None)

    def misaligned(inputs):  # each tensor as a contiguous view one element into a larger buffer
        out = {}
        for n, t in inputs.items():
            if t is None:
                out[n] = None
                continue
            buf = torch.empty(t.numel() + 1, device=t.device, dtype=t.dtype)
            buf[1:].copy_(t.detach().flatten())
            out[n] = buf[1:].view(t.shape).requires_grad_(True)
        return out

    for inputs in (x, misaligned(x)):
        assert (inputs["q"].data_ptr() % 16 == 0) == (inputs is x)
        with SETTINGS.override(direct_launch=False):
            want = {n: t.clone() for n, t in flatten(run(chunk_op, inputs)).items()}
        for _ in range(3):
            got = flatten(run(chunk_op, inputs))
            assert got.keys() == want.keys() and all(torch.equal(got[n], want[n]) for n in want)
    torch.cuda.synchronize()
