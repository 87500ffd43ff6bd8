"""Forget-gate biases from the teacher's attention spans: each kv head's slots start with the memory its teacher
head reads over.

A slot whose gate keeps alpha of itself a token (write 1 - alpha) holds an exponential average whose weights on the
tokens n back are (1 - alpha) alpha^n: their mean distance, its decay horizon, is alpha / (1 - alpha). Matching it
to a teacher head's mean attention distance D (gsa.convert.attention_weights.attention_spans, the weight on the
first tokens, attention sinks, left out) gives alpha = D / (1 + D); the layer's gate is
alpha = sigmoid(f) ** (1 / tau), so at f = W_f x + b with W_f x ~ 0 the bias is b = logit(alpha ** tau). Measured
spans are truncated by the window length (a head spread over all of a window of T tokens scores (T - 1) / 4), so
long-range heads get horizons of that order.
"""

from __future__ import annotations

import torch
from torch import nn

from gsa.convert.attention_weights import attention_spans

MIN_SPAN = 1e-3  # tokens: a head that reads only the current token would need alpha = 0 (an infinite logit)


def span_gate_logits(spans: torch.Tensor, tau: float, num_slots: int, spread: float = 0.0) -> torch.Tensor:
    """spans [L, H] (mean attention distances in tokens) -> gate biases [L, H, M]: logit(alpha ** tau) with
    alpha = D / (1 + D), D clamped to >= MIN_SPAN, plus linspace(-spread, spread, M) over each head's slots (0: every
    slot at its head's horizon). Computed in float64, returned float32, on the spans' device."""
    if spans.ndim != 2:
        raise ValueError(f"spans must be [layers, kv heads], got {tuple(spans.shape)}")
    if not tau > 0 or num_slots < 1 or not spread >= 0:
        raise ValueError(f"need tau > 0, num_slots >= 1 and spread >= 0, got {tau}, {num_slots}, {spread}")
    d = spans.double().clamp(min=MIN_SPAN)
    log_keep = tau * (torch.log(d) - torch.log1p(d))  # log(alpha ** tau) < 0
    logit = log_keep - torch.log(-torch.expm1(log_keep))
    offsets = torch.linspace(-spread, spread, num_slots, dtype=torch.float64, device=spans.device)
    return (logit[..., None] + offsets).float()


@torch.no_grad()
def init_gates_from_spans(student: nn.Module, teacher: nn.Module, input_ids: torch.Tensor,
                          spread: float = 0.0, batch_size: int = 8, sinks: int = 4) -> torch.Tensor:
    """Set every student layer's f_proj bias from the teacher's attention spans on input_ids [N, T] (run batch_size
    rows at a time; the weight on each row's first `sinks` tokens left out: attention_weights.mean_distance);
    returns the spans [L, H]. The student needs gate_bias=True (an f_proj with a bias per head and slot) and the
    teacher's layer and kv-head counts."""
    layers = student.model.layers
    if not all(getattr(b.attn, "f_proj", None) is not None and b.attn.f_proj.bias is not None for b in layers):
        raise ValueError("gate init from the teacher's spans sets f_proj's bias: the student needs gate_bias=True")
    spans = attention_spans(teacher, input_ids, sinks=sinks, batch_size=batch_size)
    attn = layers[0].attn
    if tuple(spans.shape) != (len(layers), attn.num_kv_heads):
        raise ValueError(f"the teacher has {tuple(spans.shape)} (layers, kv heads), the student "
                         f"{(len(layers), attn.num_kv_heads)}")
    logits = span_gate_logits(spans, attn.gate_logit_normalizer, attn.num_slots, spread)
    for block, b in zip(layers, logits):
        block.attn.f_proj.bias.copy_(b.flatten().to(block.attn.f_proj.bias.dtype))
    return spans
