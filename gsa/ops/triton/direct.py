"""Launching an already compiled Triton kernel without JITFunction.run's per-launch work (SETTINGS.direct_launch).

Why: the chunked op is host-bound at the 1.3B shape on the H100 host. One fwd+bwd (21 launches) takes the host
1.7-2.6 ms to enqueue against ~2.3 ms of GPU work, and under cProfile Triton's `kernel[grid](...)` was half of it
(`JITFunction.run` ~57 us a launch, profiler included). At every launch it binds the arguments, specializes each one,
builds the cache key and reads its settings again. Measured without the profiler (`benchmarks/host_time.py`),
launching directly took 0.03-0.44 ms off a fwd+bwd's host time in 7 of 8 A/Bs (docs/log.md, "Kernels").

Here each kernel's parameters are read once, and a launch is keyed by what Triton specializes a compiled kernel
on, or by something finer: constexpr values as they are; tensors by dtype and 16-byte alignment; ints by whether
they equal 1, divide by 16 and fit 32 bits; floats by type; None, bools and strings by value; and the launch
options (num_warps, num_stages, launch_pdl, ...). A key seen before launches its compiled kernel through the
kernel's own launcher, with the arguments in signature order as JITFunction.run passes them. A new key goes
through `kernel[grid](...)` (compiling, or finding Triton's cached kernel) and keeps what it returns. A finer key
only costs a miss, never a wrong kernel.

Not covered: a launch hook set in triton.knobs (profilers such as proton), under which every launch takes the
normal path (without one, the launcher gets None for the hooks and their metadata, and skips them); and settings
Triton reads at launch time and folds into compile options (TRITON_DEBUG, instrumentation) changed after a
kernel's first launch in the process.
"""

from __future__ import annotations

import operator

import torch
from triton import knobs
from triton.runtime.driver import driver

_I32 = (-(2**31), 2**31)


class _Params:
    """A JITFunction's parameter names and defaults, and where its constexpr and its runtime parameters sit in the
    signature (read once)."""

    __slots__ = ("names", "defaults", "name_set", "constexpr_at", "runtime_at")

    def __init__(self, kernel):
        self.names = tuple(p.name for p in kernel.params)
        self.defaults = {p.name: p.default for p in kernel.params if p.has_default}
        self.name_set = frozenset(self.names)
        self.constexpr_at = tuple(i for i, p in enumerate(kernel.params) if p.is_constexpr)
        self.runtime_at = tuple(i for i, p in enumerate(kernel.params) if not p.is_constexpr)


_params: dict = {}
_compiled: dict = {}


def arg_key(value, constexpr: bool):
    """What a launch's compiled kernel depends on in one argument (at least as fine as Triton's specialization)."""
    if constexpr or value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value.dtype, value.data_ptr() % 16 == 0
    if isinstance(value, int):
        return value == 1, value % 16 == 0, _I32[0] <= value < _I32[1]
    if isinstance(value, float):
        return float
    return value


def _hooked(hook) -> bool:
    # Triton 3.6 keeps each hook as a HookChain, empty unless a profiler added to it; earlier versions used None
    return hook is not None and bool(getattr(hook, "calls", True))


def _runtime_key(values: list, at: tuple) -> tuple:
    """arg_key of each runtime argument values[i], i in at: None, plain tensors and ints (nearly all of a launch's)
    inline, as a function call an argument was a third of a launch's host time; anything else through arg_key."""
    lo, hi = _I32
    key = []
    add = key.append
    for i in at:
        v = values[i]
        if v is None:
            add(None)
        elif type(v) is torch.Tensor:
            add((v.dtype, not v.data_ptr() & 15))
        elif type(v) is int:
            add((v == 1, not v & 15, lo <= v < hi))
        else:
            add(arg_key(v, False))
    return tuple(key)


def _getter(at: list[int]):
    """seq -> tuple(seq[i] for i in at), in C where it can (operator.itemgetter returns a bare item for one index)."""
    if len(at) > 1:
        return operator.itemgetter(*at)
    if at:
        i = at[0]
        return lambda seq: (seq[i],)
    return lambda seq: ()


class _Layout:
    """One call form of a kernel (how many positional arguments, which keywords in which order), mapped once onto
    its signature: `values` gathers the launcher's arguments in signature order from args + keyword values +
    defaults, `options` the launch options' values (keywords that are not parameters), `constexprs` the constexpr
    values from the gathered arguments; `runtime_at` the runtime parameters' positions."""

    __slots__ = ("values", "defaults", "options", "constexprs", "runtime_at")

    def __init__(self, p: _Params, nargs: int, names: tuple):
        at = {name: nargs + i for i, name in enumerate(names)}
        rest = [name for name in p.names[nargs:] if name not in at]
        self.defaults = tuple(p.defaults[name] for name in rest)  # KeyError: a required argument is missing
        base = nargs + len(names)
        at.update((name, base + i) for i, name in enumerate(rest))
        self.values = _getter(list(range(nargs)) + [at[name] for name in p.names[nargs:]])
        self.options = _getter([i for i, name in enumerate(names) if name not in p.name_set])
        self.constexprs = _getter(list(p.constexpr_at))
        self.runtime_at = p.runtime_at


_layouts: dict = {}


def _layout(kernel, nargs: int, names: tuple) -> _Layout | None:
    p = _params.get(kernel)
    if p is None:
        p = _params[kernel] = _Params(kernel)
    if nargs > len(p.names):
        return None
    try:
        lay = _Layout(p, nargs, names)
    except KeyError:
        return None  # a required argument is missing: kernel[grid] raises Triton's own error
    _layouts[kernel, nargs, names] = lay
    return lay


def launch_direct(kernel, grid: tuple, args: tuple, kwargs: dict) -> None:
    """kernel[grid](*args, **kwargs), through the compiled kernel's launcher once this key has been launched."""
    names = tuple(kwargs)
    lay = _layouts.get((kernel, len(args), names)) or _layout(kernel, len(args), names)
    if lay is None:
        kernel[grid](*args, **kwargs)
        return
    kv = tuple(kwargs.values())
    values = lay.values(args + kv + lay.defaults)
    device = driver.active.get_current_device()
    key = (lay, device, lay.options(kv), lay.constexprs(values), _runtime_key(values, lay.runtime_at))
    compiled = _compiled.get(key)
    hooks = _hooked(knobs.runtime.launch_enter_hook) or _hooked(knobs.runtime.launch_exit_hook)
    if compiled is None or hooks:
        compiled = kernel[grid](*args, **kwargs)
        if compiled is not None and not hooks:
            _compiled[key] = compiled
        return
    g0, g1, g2 = (tuple(grid) + (1, 1))[:3]
    compiled.run(g0, g1, g2, driver.active.get_current_stream(device), compiled.function, compiled.packed_metadata,
                 None, None, None, *values)
