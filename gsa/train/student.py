"""What the [distill] and [lora] sections do to the model before and during training: the frozen teacher, the
forget-gate init from its attention spans, the parameters each distillation stage trains, LoRA adapters, and the
loss of a distillation stage."""

from __future__ import annotations

import torch
from torch import nn

from gsa.errors import InputError

from .config import Config


def load_teacher(cfg: Config, device: torch.device) -> nn.Module:
    """The frozen float32 teacher of cfg.distill.teacher, in eval mode on `device`."""
    from gsa.models.loading import load_pretrained

    teacher = load_pretrained(cfg.distill.teacher, dtype=torch.float32).to(device).eval()
    teacher.requires_grad_(False)
    return teacher


def prepare_student(student: nn.Module, teacher: nn.Module | None, cfg: Config, first_windows, log) -> None:
    """Before the optimizer sees the student: with distill.gate_init, set its gate biases from the teacher's spans
    on the first distill.gate_init_sequences training windows (first_windows(n) -> input_ids [n, T]); in the stages
    "feature_map" and "attention", freeze all but distill.train_params; with lora.rank > 0, inject adapters (and
    freeze what they replace)."""
    dc = cfg.distill
    if teacher is not None and dc.gate_init == "teacher_span":
        from gsa.convert.gate_init import init_gates_from_spans

        device = next(teacher.parameters()).device
        ids = first_windows(dc.gate_init_sequences).to(device)
        try:
            spans = init_gates_from_spans(student, teacher, ids, dc.gate_init_spread, cfg.train.micro_batch_size)
        except ValueError as e:
            raise InputError(f"config key distill.gate_init = \"teacher_span\": {e}") from None
        log(f"gate init: teacher attention spans {spans.min():.1f}-{spans.max():.1f} tokens (median "
            f"{spans.median():.1f}) over {len(ids)} windows")
    if teacher is not None and dc.stage in ("feature_map", "attention"):
        from gsa.convert.distill import attention_transfer_parameters

        attention_transfer_parameters(student, tuple(dc.train_params))
    if cfg.lora.rank:
        from .lora import apply_lora

        apply_lora(student, cfg.lora)


def distillation_loss(student: nn.Module, teacher: nn.Module, batch: dict[str, torch.Tensor], cfg: Config
                      ) -> torch.Tensor:
    """The loss of the configured distillation stage on one batch (student: the plain, unwrapped model)."""
    from gsa.convert.distill import attention_transfer_loss, logit_distillation_loss

    dc, ids = cfg.distill, batch["input_ids"]
    if dc.stage == "feature_map":
        from gsa.convert.attention_weights import feature_map_loss

        return feature_map_loss(student, teacher, ids)
    if dc.stage == "attention":
        return attention_transfer_loss(student, teacher, ids, answer=batch.get("answer"),
                                       answer_weight=dc.answer_weight)
    return logit_distillation_loss(student, teacher, ids, temperature=dc.temperature, answer=batch.get("answer"),
                                   answer_weight=dc.answer_weight)
