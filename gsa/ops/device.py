"""Run on the inputs' CUDA device. Triton launches a kernel on the *current* CUDA device and its current stream,
wherever the pointers live: with tensors on cuda:1 while cuda:0 is current, the kernels would run on device 0,
reading device 1's memory over peer access (or faulting) and unordered with device 1's stream. Every place that
hands tensors to Triton kernels (the op and its decode step; RMSNorm, SwiGLU's product and the decode GEMV in
gsa.nn) makes the inputs' device current for the call, so a layer or model on any GPU launches there."""

from __future__ import annotations

import contextlib

import torch


def on_device_of(x: torch.Tensor):
    """torch.cuda.device(x.device) while x is on a CUDA device that is not the current one, else a null context
    (CPU tensors, the current device, inside torch.compile: a compiled graph launches on its inputs' device)."""
    if x.is_cuda and not torch.compiler.is_compiling() and x.get_device() != torch.cuda.current_device():
        return torch.cuda.device(x.device)
    return contextlib.nullcontext()

