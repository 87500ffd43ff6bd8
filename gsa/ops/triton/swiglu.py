"""SwiGLU's element-wise half, silu(gate) * up, as one Triton kernel forward and one backward.

PyTorch runs it as two kernels forward and five backward over [N, F] tensors (F = 5632 at 1.3B: ~185 MB each in
bf16) and keeps silu(gate) for the backward besides gate and up; here the forward reads gate and up and writes y,
the backward reads dy, gate and up and writes dgate and dup, and only gate and up are kept. float32 arithmetic,
outputs in the inputs' dtype. Registered as torch.library custom ops (fake impls + autograd).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gsa.ops.triton.launch import launch, cdiv

BLOCK = 2048


@triton.jit
def swiglu_fwd_kernel(g, u, y, n, BLOCK: tl.constexpr):
    o = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = o < n
    b_g = tl.load(g + o, mask=m, other=0).to(tl.float32)
    b_u = tl.load(u + o, mask=m, other=0).to(tl.float32)
    tl.store(y + o, (b_g * tl.sigmoid(b_g) * b_u).to(y.dtype.element_ty), mask=m)


@triton.jit
def swiglu_bwd_kernel(dy, g, u, dg, du, n, BLOCK: tl.constexpr):
    o = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = o < n
    b_dy = tl.load(dy + o, mask=m, other=0).to(tl.float32)
    b_g = tl.load(g + o, mask=m, other=0).to(tl.float32)
    b_u = tl.load(u + o, mask=m, other=0).to(tl.float32)
    b_sig = tl.sigmoid(b_g)
    b_silu = b_g * b_sig
    tl.store(du + o, (b_dy * b_silu).to(du.dtype.element_ty), mask=m)
    # d silu(g) / dg = sig * (1 + g * (1 - sig))
    tl.store(dg + o, (b_dy * b_u * b_sig * (1.0 + b_g * (1.0 - b_sig))).to(dg.dtype.element_ty), mask=m)


@torch.library.custom_op("gsa::swiglu_fwd", mutates_args=())
def swiglu_fwd(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """gate, up: contiguous, same shape and dtype -> silu(gate) * up."""
    y = torch.empty_like(gate)
    n = gate.numel()
    if n:
        launch(swiglu_fwd_kernel, (cdiv(n, BLOCK),), direct=False)(gate, up, y, n, BLOCK=BLOCK, num_warps=8)
    return y


@swiglu_fwd.register_fake
def _(gate, up):
    return torch.empty_like(gate)


@torch.library.custom_op("gsa::swiglu_bwd", mutates_args=())
def swiglu_bwd(dy: torch.Tensor, gate: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (dgate, dup), in the inputs' dtype."""
    dg, du = torch.empty_like(gate), torch.empty_like(up)
    n = gate.numel()
    if n:
        launch(swiglu_bwd_kernel, (cdiv(n, BLOCK),), direct=False)(dy.contiguous(), gate, up, dg, du, n,
                                                                   BLOCK=BLOCK, num_warps=8)
    return dg, du


@swiglu_bwd.register_fake
def _(dy, gate, up):
    return torch.empty_like(gate), torch.empty_like(up)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, dy):
    return swiglu_bwd(dy, *ctx.saved_tensors)


swiglu_fwd.register_autograd(_backward, setup_context=_setup_context)


def swiglu_triton(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for gate, up [..., F] of one shape and dtype; differentiable in both."""
    if gate.shape != up.shape or gate.dtype != up.dtype:
        raise ValueError(f"swiglu_triton: gate and up must match, got {tuple(gate.shape)} {gate.dtype} and "
                         f"{tuple(up.shape)} {up.dtype}")
    return swiglu_fwd(gate.contiguous(), up.contiguous())
