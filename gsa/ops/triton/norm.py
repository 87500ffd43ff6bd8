"""RMSNorm (optionally of swish(x)) as one Triton kernel forward and one backward, for the model's norms on CUDA.

Written with PyTorch element-wise ops, an RMSNorm of a [16K, 2048] bf16 activation runs ~7 kernels forward and
~20 backward over float32 copies of it (~6 GB of traffic at the 1.3B training shape, three norms a block; the GSA
block's output norm also applies swish first). Here a program holds whole rows in registers: the forward reads x
and writes y and rstd, the backward reads x, dy and rstd and writes dx and per-program partial sums of dw, which
torch adds up (a fixed order: deterministic). Statistics and arithmetic in float32; outputs in x's dtype.

    y = xin * rstd * w,  xin = swish(x) or x,  rstd = 1 / sqrt(mean(xin^2) + eps)      (per row of D values)

Registered as torch.library custom ops (fake impls + autograd), so torch.compile sees opaque nodes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gsa.ops.triton.launch import launch, next_pow2

# Rows longer than this do not fit a program's registers (one row of float32 a program).
MAX_D = 16384


@triton.jit
def _swish_in(b_x, SWISH: tl.constexpr):
    if SWISH:
        return b_x * tl.sigmoid(b_x)
    return b_x


@triton.jit
def rms_norm_fwd_kernel(x, w, y, rstd, N, D, eps, BD: tl.constexpr, SWISH: tl.constexpr):
    i_n = tl.program_id(0)
    o_d = tl.arange(0, BD)
    m_d = o_d < D
    b_x = tl.load(x + i_n.to(tl.int64) * D + o_d, mask=m_d, other=0).to(tl.float32)
    b_in = _swish_in(b_x, SWISH)
    b_r = 1.0 / tl.sqrt(tl.sum(b_in * b_in, 0) / D + eps)
    b_w = tl.load(w + o_d, mask=m_d, other=0).to(tl.float32)
    tl.store(y + i_n.to(tl.int64) * D + o_d, (b_in * b_r * b_w).to(y.dtype.element_ty), mask=m_d)
    tl.store(rstd + i_n, b_r)


@triton.jit
def rms_norm_bwd_kernel(x, w, rstd, dy, dx, dw, N, D, BD: tl.constexpr, SWISH: tl.constexpr):
    """Program p takes rows p, p + P, p + 2P, ... (P programs) and writes its part of dw: dw[p] = sum dy * xhat."""
    i_p, n_p = tl.program_id(0), tl.num_programs(0)
    o_d = tl.arange(0, BD)
    m_d = o_d < D
    b_w = tl.load(w + o_d, mask=m_d, other=0).to(tl.float32)
    b_dw = tl.zeros([BD], dtype=tl.float32)
    for i_n in range(i_p, N, n_p):
        o_row = tl.cast(i_n, tl.int64) * D + o_d  # (the interpreter hands the loop an int)
        b_x = tl.load(x + o_row, mask=m_d, other=0).to(tl.float32)
        b_dy = tl.load(dy + o_row, mask=m_d, other=0).to(tl.float32)
        b_r = tl.load(rstd + i_n)
        b_xh = _swish_in(b_x, SWISH) * b_r
        b_wdy = b_dy * b_w
        b_dx = b_r * (b_wdy - b_xh * (tl.sum(b_wdy * b_xh, 0) / D))
        if SWISH:  # d swish(x) / dx = sig * (1 + x * (1 - sig))
            b_sig = tl.sigmoid(b_x)
            b_dx = b_dx * b_sig * (1.0 + b_x * (1.0 - b_sig))
        tl.store(dx + o_row, b_dx.to(dx.dtype.element_ty), mask=m_d)
        b_dw += b_dy * b_xh
    tl.store(dw + i_p.to(tl.int64) * D + o_d, b_dw, mask=m_d)


def _warps(BD: int) -> int:
    return min(16, max(1, BD // 512))


def _programs(N: int, device: torch.device) -> int:
    # enough programs to fill the GPU a few times; each then sums its share of dw (fewer partial rows to add up)
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 2
    return max(1, min(N, 4 * sms))


@torch.library.custom_op("gsa::rms_norm_fwd", mutates_args=())
def rms_norm_fwd(x: torch.Tensor, weight: torch.Tensor, eps: float, swish: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, D] (contiguous), weight [D] -> y [N, D] in x's dtype and rstd [N] float32."""
    N, D = x.shape
    y = torch.empty_like(x)
    rstd = torch.empty(N, dtype=torch.float32, device=x.device)
    if N:
        BD = next_pow2(D)
        launch(rms_norm_fwd_kernel, (N,), direct=False)(x, weight, y, rstd, N, D, eps, BD=BD, SWISH=swish,
                                                        num_warps=_warps(BD))
    return y, rstd


@rms_norm_fwd.register_fake
def _(x, weight, eps, swish):
    return torch.empty_like(x), x.new_empty(x.shape[0], dtype=torch.float32)


@torch.library.custom_op("gsa::rms_norm_bwd", mutates_args=())
def rms_norm_bwd(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor, swish: bool
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """dy, x [N, D], weight [D], rstd [N] -> dx [N, D] in x's dtype and dw [D] in weight's dtype."""
    N, D = x.shape
    dx = torch.empty_like(x)
    P = _programs(N, x.device)
    parts = torch.zeros(P, D, dtype=torch.float32, device=x.device)
    if N:
        BD = next_pow2(D)
        launch(rms_norm_bwd_kernel, (P,), direct=False)(x, weight, rstd, dy.contiguous(), dx, parts, N, D, BD=BD,
                                                        SWISH=swish, num_warps=_warps(BD))
    return dx, parts.sum(0).to(weight.dtype)


@rms_norm_bwd.register_fake
def _(dy, x, weight, rstd, swish):
    return torch.empty_like(x), torch.empty_like(weight)


def _setup_context(ctx, inputs, output):
    x, weight, eps, swish = inputs
    ctx.save_for_backward(x, weight, output[1])
    ctx.swish = swish


def _backward(ctx, dy, drstd):
    x, weight, rstd = ctx.saved_tensors
    dx, dw = rms_norm_bwd(dy, x, weight, rstd, ctx.swish)
    return dx, dw, None, None


rms_norm_fwd.register_autograd(_backward, setup_context=_setup_context)


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor, eps: float, swish: bool = False) -> torch.Tensor:
    """RMSNorm over the last dim of x [..., D] (of swish(x) with `swish`) with weight [D]; y in x's dtype.
    Differentiable in x and weight; D <= MAX_D."""
    D = x.shape[-1]
    if D > MAX_D:
        raise ValueError(f"rms_norm_triton: last dim must be <= {MAX_D}, got {D}")
    if weight.shape != (D,):
        raise ValueError(f"rms_norm_triton: weight must be [{D}], got {tuple(weight.shape)}")
    y, _ = rms_norm_fwd(x.reshape(-1, D).contiguous(), weight.contiguous(), float(eps), bool(swish))
    return y.view(x.shape)
