"""Run on the inputs' CUDA device. Triton launches a kernel on the *current* CUDA device and its current stream,
wherever the pointers live: with tensors on cuda:1 while cuda:0 is current, the kernels would run on device 0,
reading device 1's memory over peer access (or faulting) and unordered with device 1's stream. The entry points
(the op, the layer, the model) make the inputs' device current for their call."""

from __future__ import annotations

import contextlib
import functools

import torch


def on_device_of(x: torch.Tensor):
    """torch.cuda.device(x.device) while x is on a CUDA device that is not the current one, else a null context
    (CPU tensors, the current device, inside torch.compile: a compiled graph launches on its inputs' device)."""
    if x.is_cuda and not torch.compiler.is_compiling() and x.get_device() != torch.cuda.current_device():
        return torch.cuda.device(x.device)
    return contextlib.nullcontext()


def on_input_device(name: str):
    """Decorate a module's forward so it runs under on_device_of(its argument `name`, positional after self or by
    keyword); the signature stays visible (functools.wraps), as transformers' generate inspects it."""

    def decorate(forward):
        @functools.wraps(forward)
        def wrapper(self, *args, **kwargs):
            x = args[0] if args else kwargs.get(name)
            if not isinstance(x, torch.Tensor):
                return forward(self, *args, **kwargs)
            with on_device_of(x):
                return forward(self, *args, **kwargs)

        return wrapper

    return decorate
