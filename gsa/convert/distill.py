"""Distillation losses for finetuning a converted GSA student towards its Transformer teacher (T2R).

Two stages, as in the modern conversion recipes (LoLCATs-style attention transfer, then end-to-end distillation):

1. Attention transfer (`attention_transfer_loss`): every student attention layer gets the *teacher's* input to the
   matching attention layer (the RMS-normalised hidden state) and is trained to reproduce the teacher layer's
   attention output (after o_proj): mean over layers of the MSE over real tokens. Layers are independent, so
   errors do not compound and one teacher forward serves all of them. Only the new / adapted parameters train
   (`attention_transfer_parameters`: f_proj by default; q/k/v/o optionally), everything else is frozen.
2. Logit distillation (`logit_distillation_loss`): KL(teacher || student) of the next-token distributions at
   temperature `temperature` (scaled by temperature ** 2), averaged over real tokens, with every student
   parameter trainable (or whatever the caller leaves unfrozen).

The teacher runs in the same process, under no_grad, in eval mode. These are plain functions: the trainer decides
optimiser, schedule, data and logging.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gsa.nn.backend import use_triton_kernels
from gsa.ops.validation import KERNEL_DTYPES

ADAPTABLE = ("f_proj", "q_proj", "k_proj", "v_proj", "o_proj", "memory_scale", "q_map", "k_map")


def attention_transfer_parameters(student: nn.Module, train: tuple[str, ...] = ("f_proj",)) -> list[nn.Parameter]:
    """Freeze every student parameter except the attention projections named in `train` (a subset of ADAPTABLE,
    biases included; "memory_scale" is a hybrid layer's per-head share of the slot memory, "q_map" / "k_map" the
    learned feature maps of feature_map="learned"); return the trainable ones. A ValueError names those of `train`
    the student has no parameter for (e.g. maps on an identity-map student): the rest alone would train."""
    unknown = sorted(set(train) - set(ADAPTABLE))
    if unknown or not train:
        raise ValueError(f"train must be a non-empty subset of {ADAPTABLE}, got {train}")
    owners = {}  # parameter name -> the entry of ADAPTABLE it belongs to, or None
    for name, _ in student.named_parameters():
        parts = name.split(".")
        owners[name] = (parts[-2] if len(parts) >= 3 and parts[-3] == "attn" else
                        parts[-1] if len(parts) >= 2 and parts[-2] == "attn" else None)
    absent = sorted(set(train) - set(owners.values()))
    if absent:
        raise ValueError(f"train names {absent}, for which the student has no parameter")
    trainable = []
    for name, p in student.named_parameters():
        p.requires_grad_(owners[name] in train)
        if p.requires_grad:
            trainable.append(p)
    return trainable


def _layer_io(model: nn.Module, modules, input_ids, attention_mask):
    """One forward of `model` (no grad); per module of `modules` its input hidden state, its output and the RoPE
    (cos, sin) it was given (None where it takes none)."""
    n = len(modules)
    inputs, outputs, rope = [None] * n, [None] * n, [None] * n
    hooks = []
    for i, module in enumerate(modules):
        def pre(module, args, kwargs, i=i):
            inputs[i] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            rope[i] = kwargs.get("position_embeddings")

        def post(module, args, kwargs, out, i=i):
            outputs[i] = out[0] if isinstance(out, tuple) else out

        hooks.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        hooks.append(module.register_forward_hook(post, with_kwargs=True))
    try:
        with torch.no_grad():
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return inputs, outputs, rope


def teacher_attention_io(teacher: nn.Module, input_ids, attention_mask):
    """One teacher forward (no grad); per layer the attention's input [B, T, d], its output [B, T, d] (after o_proj)
    and the RoPE (cos, sin) it was given (each [B, T, head_dim])."""
    return _layer_io(teacher, [layer.self_attn for layer in teacher.model.layers], input_ids, attention_mask)


def block_io(model: nn.Module, input_ids, attention_mask):
    """One forward (no grad) of a teacher or a GSA student (any causal LM with `.model.layers`); per layer its input
    hidden state (the residual stream) [B, T, d] and its output [B, T, d]."""
    inputs, outputs, _ = _layer_io(model, model.model.layers, input_ids, attention_mask)
    return inputs, outputs


def attention_transfer_loss(
    student: nn.Module,
    teacher: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    answer: torch.Tensor | None = None,
    answer_weight: float = 0.0,
    relative: bool = False,
    target: str = "attention",
) -> torch.Tensor:
    """Stage 1: mean over layers of the MSE between each student attention layer's output and the teacher's.

    input_ids: [B, T]; attention_mask: [B, T] (1 = token, 0 = padding; padded positions are left out of the loss).
    student: a converted GSAForCausalLM (student.model.layers[i].attn); teacher: its Llama-family teacher
    (teacher.model.layers[i].self_attn). Returns a float32 scalar; gradients reach only the student.

    answer [B, T] bool (True where the next token is a passkey answer token) with answer_weight > 0 adds
    answer_weight x each layer's MSE averaged over those positions alone. There the teacher's retrieval heads read
    the needle, far outside a hybrid student's window; averaged with every other position (5 of 512 a passkey row)
    that per-layer signal is lost, and it is the densest one there is for what the slots must store.

    relative: each layer's loss divided by its teacher output's mean square (over the same positions, no gradient),
    so that every layer weighs alike. SmolLM2-135M's attention outputs range from 0.014 (layer 0) to 72 (layer 24) in
    mean square, so the plain mean is the last layers' (docs/log.md, "T2R").

    target "block": each student block (attention, then the carried MLP) on the teacher block's input (the residual
    stream), against the teacher block's output; relative then divides by the mean square of what the teacher block
    adds to its input. An attention error the MLP amplifies then counts as amplified: on SmolLM2-135M a converted
    student's layer-1 attention, 0.2 off in relative squared error, made the next MLPs raise every position's
    residual stream to the first token's massive-activation scale; 200 CPU steps on this target with f_proj alone
    trained cut that 250x stream error to 94x and left perplexity where it was (docs/log.md, "T2R").
    """
    if target not in ("attention", "block"):
        raise ValueError(f"target must be 'attention' or 'block', got {target!r}")
    if len(student.model.layers) != len(teacher.model.layers):
        raise ValueError("student and teacher must have the same number of layers")
    if target == "block":
        inputs, targets = block_io(teacher, input_ids, attention_mask)
    else:
        inputs, targets, _ = teacher_attention_io(teacher, input_ids, attention_mask)
    mask = None if attention_mask is None else attention_mask.to(torch.bool)
    weigh = answer is not None and answer_weight > 0
    if weigh:
        answer = answer.to(torch.bool) if mask is None else answer.to(torch.bool) & mask
    losses = []
    for block, x, t in zip(student.model.layers, inputs, targets):
        x = x.to(block.attn.q_proj.weight.dtype)
        if target == "block":
            y, _ = block(x, attention_mask, None, None, False)
        else:
            y, _ = block.attn(x, attention_mask=attention_mask)
        err = (y.float() - t.float()).pow(2).mean(-1)  # [B, T]
        loss = err[mask].mean() if mask is not None else err.mean()
        if weigh:  # a batch without answers adds 0 (the sum over no positions), not NaN
            loss = loss + answer_weight * err[answer].sum() / answer.sum().clamp(min=1)
        if relative:  # what the teacher's layer adds (block: its output less its input; attention: its output)
            scale = (t.float() - x.float() if target == "block" else t.float()).pow(2).mean(-1)
            loss = loss / (scale[mask].mean() if mask is not None else scale.mean()).clamp(min=1e-12)
        losses.append(loss)
    return torch.stack(losses).mean()


# Rows of logits a chunk of the KL: its float32 temporaries stay ~KL_CHUNK x vocab x 4 bytes (256 MB at 49152 words)
KL_CHUNK = 1024


def _kl_dtype(s: torch.Tensor, t: torch.Tensor) -> torch.dtype:
    """What the KL of logits s, t is computed in: float32, or float64 for float64 logits."""
    return torch.promote_types(torch.promote_types(s.dtype, t.dtype), torch.float32)


def _log_softmaxes(s: torch.Tensor, t: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """log softmax(s / T) and log softmax(t / T) of logits [n, vocab], in _kl_dtype."""
    dtype = _kl_dtype(s, t)
    return F.log_softmax(s.to(dtype) / temperature, dim=-1), F.log_softmax(t.to(dtype) / temperature, dim=-1)


def _kl_rows(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t / T) || softmax(s / T)) [n] of each row of logits s, t [n, vocab]."""
    ls, lt = _log_softmaxes(s, t, temperature)
    return (lt.exp() * (lt - ls)).sum(-1)


class _ChunkedKL(torch.autograd.Function):
    """sum over rows of w_n * KL_n (rows of weight 0 add exactly 0, whatever their logits), its float32 softmaxes
    built KL_CHUNK rows at a time in the forward and again in the backward. Autograd through the plain formula keeps
    two float32 [N, vocab] tensors for the backward (the student's log-softmax and the teacher's probabilities: 13 GB
    at 32K tokens and 49152 words, beside 3 GB of bf16 logits) and builds several more in its forward; this keeps
    only the two logits tensors it was given."""

    @staticmethod
    def forward(ctx, s, t, w, temperature):
        total = torch.zeros((), dtype=w.dtype, device=s.device)  # w is in _kl_dtype
        for i in range(0, s.shape[0], KL_CHUNK):
            kl = _kl_rows(s[i:i + KL_CHUNK], t[i:i + KL_CHUNK], temperature)
            wi = w[i:i + KL_CHUNK]
            total += torch.where(wi != 0, kl * wi, 0.0).sum()
        ctx.save_for_backward(s, t, w)
        ctx.temperature = temperature
        return total

    @staticmethod
    def backward(ctx, grad):
        s, t, w = ctx.saved_tensors
        temperature = ctx.temperature
        ds = torch.empty_like(s)
        for i in range(0, s.shape[0], KL_CHUNK):  # d KL_n / d s_n = (softmax(s_n / T) - softmax(t_n / T)) / T
            ls, lt = _log_softmaxes(s[i:i + KL_CHUNK], t[i:i + KL_CHUNK], temperature)
            wi = w[i:i + KL_CHUNK, None]
            ds[i:i + KL_CHUNK] = torch.where(wi != 0, (ls.exp() - lt.exp()) * (grad * wi / temperature), 0.0)
        return ds, None, None, None


def kl_to_teacher(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """temperature**2 * KL(softmax(teacher / temperature) || softmax(student / temperature)), mean over positions.

    logits: [B, T, vocab] (computed in float32); mask: [B, T] (True / 1 = counted; none counted gives NaN, as a mean
    over nothing). Returns a float32 scalar (float64 for float64 logits). A teacher without gradient (the usual case)
    takes one of two paths that keep nothing [rows, vocab] in float32 for the backward: on CUDA (16- or 32-bit
    logits; gsa.nn.backend.use_triton_kernels) the fused kernels of gsa.ops.triton.kl, one pass forward and one
    backward; elsewhere _ChunkedKL, KL_CHUNK rows at a time, its backward rebuilding the softmaxes. Teacher logits that
    require grad take autograd through the plain formula, which gives both gradients.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student_logits and teacher_logits must have one shape, got {tuple(student_logits.shape)} "
                         f"and {tuple(teacher_logits.shape)}")
    vocab = student_logits.shape[-1]
    s, t = student_logits.reshape(-1, vocab), teacher_logits.reshape(-1, vocab)
    keep = mask.reshape(-1).to(torch.bool) if mask is not None else None
    if teacher_logits.requires_grad:
        kl = _kl_rows(s, t, temperature)
        kl = kl[keep] if keep is not None else kl
        return kl.mean() * temperature**2
    wdtype = _kl_dtype(s, t)
    if keep is None:
        w = torch.full((s.shape[0],), temperature**2 / s.shape[0], dtype=wdtype, device=s.device)
    else:  # on the device, no host sync: each counted row weighs T^2 / count, the others 0
        w = keep.to(wdtype) * (temperature**2 / keep.sum().to(wdtype))
    if s.dtype in KERNEL_DTYPES and t.dtype == s.dtype and use_triton_kernels(s):
        from gsa.ops.triton.kl import fused_kl

        return fused_kl(s, t, w, temperature)
    return _ChunkedKL.apply(s, t, w, temperature)


def logit_distillation_loss(
    student: nn.Module,
    teacher: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    answer: torch.Tensor | None = None,
    answer_weight: float = 0.0,
) -> torch.Tensor:
    """Stage 2: kl_to_teacher of the two models' logits on input_ids [B, T] (the teacher under no_grad).

    answer [B, T] bool (True where the next token is a passkey answer token, as TextBatches marks it) with
    answer_weight > 0 adds answer_weight x the student's mean next-token cross-entropy over those positions: the
    ground truth of a retrieval that the KL alone spreads over every position (and that the teacher itself gets
    wrong 12-40% of the time at 512-2K tokens)."""
    with torch.no_grad():
        teacher_logits = teacher(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    student_logits = student(input_ids, attention_mask=attention_mask).logits
    loss = kl_to_teacher(student_logits, teacher_logits, attention_mask, temperature)
    if answer is not None and answer_weight:
        m = answer[:, :-1].to(torch.bool)
        ce = F.cross_entropy(student_logits[:, :-1][m].float(), input_ids[:, 1:][m], reduction="sum")
        loss = loss + answer_weight * ce / m.sum().clamp(min=1)
    return loss
