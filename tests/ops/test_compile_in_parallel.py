"""launch.compile_in_parallel: the queued launches compile in worker threads, each worker on the calling thread's
CUDA device, with the compiled kernel's launcher built and binary loaded there too (Triton 3.6 builds a C launcher
per signature at a kernel's first launch, serially, unless that is done beforehand)."""

import threading

import pytest

from skips import NO_TRITON

pytest.importorskip("triton", reason=NO_TRITON)

import gsa.ops.triton.launch as launch  # noqa: E402


class FakeCompiled:
    def __init__(self, log):
        self.log = log

    def _init_handles(self):
        self.log.append(("init", threading.current_thread().name))


class FakeKernel:
    """A JIT function's stand-in: kernel[grid](...) runs, warmup(...) compiles (both recorded)."""

    def __init__(self, log):
        self.log = log

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.log.append(("run", grid, args))

    def warmup(self, *args, grid, **kwargs):
        self.log.append(("warmup", grid, args, kwargs, threading.current_thread().name))
        return FakeCompiled(self.log)


def test_queued_launches_compile_in_workers_with_their_launchers(monkeypatch):
    log, devices = [], []
    monkeypatch.setattr(launch.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(launch.torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(launch.torch.cuda, "current_device", lambda: 1)  # the caller's device, e.g. a DDP rank's
    monkeypatch.setattr(launch.torch.cuda, "set_device", lambda d: devices.append((d, threading.current_thread().name)))
    kernels = [FakeKernel(log) for _ in range(3)]
    with launch.compile_in_parallel(workers=2) as jobs:
        for i, k in enumerate(kernels):
            launch.launch(k, (i + 1,))(i, x=i)
        assert [j[1] for j in jobs] == [(1,), (2,), (3,)]
    assert not [e for e in log if e[0] == "run"]  # nothing ran
    warm = [e for e in log if e[0] == "warmup"]
    assert sorted((e[1], e[2], e[3]) for e in warm) == [((i + 1,), (i,), {"x": i}) for i in range(3)]
    assert len([e for e in log if e[0] == "init"]) == 3  # every launcher built and binary loaded
    main = threading.current_thread().name
    assert all(e[4] != main for e in warm) and all(e[1] != main for e in log if e[0] == "init")
    assert len(devices) == 3 and all(d == 1 and t != main for d, t in devices)  # each worker on the caller's device
    launch.launch(kernels[0], (7,))(0)  # outside the block: launches run
    assert log[-1] == ("run", (7,), (0,))


def test_without_cuda_the_workers_leave_the_device_alone(monkeypatch):
    log = []
    monkeypatch.setattr(launch.torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(launch.torch.cuda, "set_device", lambda d: pytest.fail("set_device without CUDA"))
    with launch.compile_in_parallel(workers=2):
        launch.launch(FakeKernel(log), (1,))()
    assert [e[0] for e in log] == ["warmup", "init"]
