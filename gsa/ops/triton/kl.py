"""The weighted sum of KL(softmax(t / T) || softmax(s / T)) over rows of logits, as one Triton pass forward and one
backward: logit distillation's loss (gsa.convert.distill.kl_to_teacher) on CUDA.

In PyTorch element-wise ops the loss over N rows of V logits builds float32 [N, V] tensors for both log-softmaxes,
their exponent, difference and product, forward and again backward: by a count of its reads and writes ~100 bytes a
logit, ~80 GB for a 16K-token micro-batch at SmolLM2's 49152 words. Here one program walks one row in tiles of BV
words with a running log-sum-exp of both rows: the forward reads s and t once and writes the row's KL and both
log-sum-exps (8 bytes a row), the backward reads s and t again and writes ds; ~10 bytes a logit in all for 16-bit
logits. Arithmetic in float32; ds in s's dtype.

    KL_n = sum_v p_v (t_v - s_v) / T - lse_t + lse_s,   p = softmax(t / T),  lse_x = logsumexp(x / T)  (row n)
    loss = sum_n w_n KL_n,   d loss / d s_n = w_n / T (softmax(s_n / T) - p)

A row of weight 0 reads nothing and adds exactly 0, whatever its logits (padding).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gsa.ops.device import on_device_of
from gsa.ops.triton.launch import launch
from gsa.ops.validation import KERNEL_DTYPES

# Words a program loads at once: 16 a thread at 8 warps (two 16-byte loads a thread for 16-bit logits).
BV = 4096
WARPS = 8


@triton.jit
def kl_fwd_kernel(s, t, w, kl, lse, V, stride_s, stride_t, inv_temp, BV: tl.constexpr):
    i_n = tl.program_id(0)
    b_w = tl.load(w + i_n)
    b_ms = tl.full([], float("-inf"), tl.float32)  # running max of s / T
    b_mt = tl.full([], float("-inf"), tl.float32)  # and of t / T
    b_ds = tl.zeros([], tl.float32)  # sum exp(s / T - m_s)
    b_dt = tl.zeros([], tl.float32)  # sum exp(t / T - m_t)
    b_a = tl.zeros([], tl.float32)  # sum exp(t / T - m_t) (t - s) / T
    if b_w != 0:
        p_s = s + i_n.to(tl.int64) * stride_s
        p_t = t + i_n.to(tl.int64) * stride_t
        for i_v in range(0, tl.cdiv(V, BV)):
            o_v = i_v * BV + tl.arange(0, BV)
            m_v = o_v < V
            b_s = tl.load(p_s + o_v, mask=m_v, other=float("-inf")).to(tl.float32) * inv_temp
            b_t = tl.load(p_t + o_v, mask=m_v, other=float("-inf")).to(tl.float32) * inv_temp
            b_ms_new = tl.maximum(b_ms, tl.max(b_s, 0))
            b_ds = b_ds * tl.exp(b_ms - b_ms_new) + tl.sum(tl.exp(b_s - b_ms_new), 0)
            b_ms = b_ms_new
            b_mt_new = tl.maximum(b_mt, tl.max(b_t, 0))
            b_scale = tl.exp(b_mt - b_mt_new)
            b_e = tl.exp(b_t - b_mt_new)
            b_dt = b_dt * b_scale + tl.sum(b_e, 0)
            # words where p = 0 (masked, or t = -inf) add nothing, not 0 * inf
            b_a = b_a * b_scale + tl.sum(tl.where(b_e > 0, b_e * (b_t - b_s), 0.0), 0)
            b_mt = b_mt_new
        b_lse_s = b_ms + tl.log(b_ds)
        b_lse_t = b_mt + tl.log(b_dt)
        tl.store(kl + i_n, b_a / b_dt - b_lse_t + b_lse_s)
        tl.store(lse + 2 * i_n, b_lse_s)
        tl.store(lse + 2 * i_n + 1, b_lse_t)
    else:
        tl.store(kl + i_n, 0.0)
        tl.store(lse + 2 * i_n, 0.0)
        tl.store(lse + 2 * i_n + 1, 0.0)


@triton.jit
def kl_bwd_kernel(s, t, w, lse, g, ds, V, stride_s, stride_t, inv_temp, BV: tl.constexpr):
    i_n = tl.program_id(0)
    b_w = tl.load(w + i_n)
    b_c = tl.load(g) * b_w * inv_temp
    b_lse_s = tl.load(lse + 2 * i_n)
    b_lse_t = tl.load(lse + 2 * i_n + 1)
    p_s = s + i_n.to(tl.int64) * stride_s
    p_t = t + i_n.to(tl.int64) * stride_t
    p_ds = ds + i_n.to(tl.int64) * V
    for i_v in range(0, tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        m_v = o_v < V
        if b_w != 0:
            b_s = tl.load(p_s + o_v, mask=m_v, other=0).to(tl.float32) * inv_temp
            b_t = tl.load(p_t + o_v, mask=m_v, other=0).to(tl.float32) * inv_temp
            b_d = b_c * (tl.exp(b_s - b_lse_s) - tl.exp(b_t - b_lse_t))
        else:
            b_d = tl.zeros([BV], tl.float32)
        tl.store(p_ds + o_v, b_d.to(ds.dtype.element_ty), mask=m_v)


def _rows(x: torch.Tensor) -> torch.Tensor:
    # the kernels step rows by a stride and words by 1
    return x if x.stride(-1) == 1 else x.contiguous()


class FusedKL(torch.autograd.Function):
    """sum_n w_n KL(softmax(t_n / T) || softmax(s_n / T)) of logits s, t [N, V] (float16, bfloat16 or float32; t
    without gradient) and float32 weights w [N]: a float32 scalar. Gradient for s only."""

    @staticmethod
    def forward(ctx, s: torch.Tensor, t: torch.Tensor, w: torch.Tensor, temperature: float):
        s, t, w = _rows(s), _rows(t), w.contiguous()
        N, V = s.shape
        kl = torch.empty(N, dtype=torch.float32, device=s.device)
        lse = torch.empty(N, 2, dtype=torch.float32, device=s.device)
        if N:
            with on_device_of(s):
                launch(kl_fwd_kernel, (N,), direct=False)(s, t, w, kl, lse, V, s.stride(0), t.stride(0),
                                                          1.0 / temperature, BV=BV, num_warps=WARPS)
        ctx.save_for_backward(s, t, w, lse)
        ctx.inv_temp = 1.0 / temperature
        return (kl * w).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        s, t, w, lse = ctx.saved_tensors
        N, V = s.shape
        ds = torch.empty(N, V, dtype=s.dtype, device=s.device)
        if N:
            g = grad.to(torch.float32).reshape(1).contiguous()
            with on_device_of(s):
                launch(kl_bwd_kernel, (N,), direct=False)(s, t, w, lse, g, ds, V, s.stride(0), t.stride(0),
                                                          ctx.inv_temp, BV=BV, num_warps=WARPS)
        return ds, None, None, None


def fused_kl(s: torch.Tensor, t: torch.Tensor, w: torch.Tensor, temperature: float) -> torch.Tensor:
    """FusedKL.apply(s, t, w, temperature) (its docstring): s, t [N, V] of one dtype (float16, bfloat16 or float32),
    w [N] float32, all on one device; temperature > 0. Anything else is refused by name before a kernel runs."""
    if s.dim() != 2 or t.shape != s.shape:
        raise ValueError(f"s and t must be [N, V] logits of one shape, got {tuple(s.shape)} and {tuple(t.shape)}")
    if s.dtype not in KERNEL_DTYPES or t.dtype != s.dtype:
        raise TypeError(f"s and t must share a dtype of {[str(d) for d in KERNEL_DTYPES]}, got {s.dtype} and "
                        f"{t.dtype}")
    if w.shape != (s.shape[0],) or w.dtype != torch.float32:
        raise ValueError(f"w must be float32 [{s.shape[0]}] (a weight a row), got {w.dtype} {tuple(w.shape)}")
    if not (s.device == t.device == w.device):
        raise ValueError(f"s, t and w must be on one device, got {s.device}, {t.device} and {w.device}")
    if t.requires_grad:
        raise ValueError("t (the teacher's logits) must not require grad: the kernels give s's gradient only")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return FusedKL.apply(s, t, w, temperature)
