"""Conversion in the trainer: `[model]` type "t2r" and the `[distill]` objective, registered with gsa.train.registry
when gsa.convert is imported (the trainer imports nothing above it).

- ``type = "t2r"``: a GSA student converted from a Llama-family checkpoint (``teacher = DIR``; the other keys are
  ``from_pretrained_transformer`` options: ``num_slots``, ``init``, ``gate_logit_normalizer``, ...).
  ``reinit = true`` keeps only the converted architecture and initialises every weight afresh (the
  GSA-from-scratch baseline of the same size and tokenizer).
- The distillation objective (gsa.train.config_distill.DistillConfig): the frozen teacher, the forget-gate init
  from its attention spans, the parameters each stage trains and the loss of the stage.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from gsa.convert.attention_weights import feature_map_loss
from gsa.convert.distill import attention_transfer_loss, attention_transfer_parameters, logit_distillation_loss
from gsa.convert.gate_init import init_gates_from_spans
from gsa.convert.transformer import from_pretrained_transformer
from gsa.errors import InputError, one_line
from gsa.train.registry import LoadedModelType, register_distillation, register_model_type

if TYPE_CHECKING:
    from gsa.train.config import Config


def converted_student(teacher: str, options: dict[str, Any]) -> nn.Module:
    """The GSA student converted from the checkpoint directory `teacher`; options: the `[model]` section's other
    keys (from_pretrained_transformer's options and reinit)."""
    from gsa.models import GSAForCausalLM

    params = dict(options)
    reinit = params.pop("reinit", False)
    allowed = set(inspect.signature(from_pretrained_transformer).parameters) - {"src"}
    if set(params) - allowed or not isinstance(reinit, bool):
        raise InputError(f"[model] type = 't2r' takes teacher, reinit (true/false) and {sorted(allowed)}; got "
                         f"{sorted(set(params) - allowed) or f'reinit = {reinit!r}'}")
    try:
        model = from_pretrained_transformer(teacher, **params)
    except ValueError as e:  # UnsupportedModelError (names what the teacher has) or an invalid option, as for
        raise InputError(f"[model] teacher {teacher}: {one_line(e)}") from None  # `gsa convert`
    if reinit:  # the from-scratch baseline: the converted architecture, freshly initialised
        model = GSAForCausalLM(model.config)
    return model


class T2RDistillation:
    """The `[distill]` objective of one run: the frozen float32 teacher of cfg.distill.teacher, in eval mode on
    `device`, what the stage trains, and its loss."""

    def __init__(self, cfg: Config, device: torch.device):
        from gsa.models.loading import load_pretrained

        self.cfg = cfg.distill
        self.batch_size = cfg.train.micro_batch_size  # of the gate init's forward passes
        self.teacher = load_pretrained(self.cfg.teacher, dtype=torch.float32).to(device).eval()
        self.teacher.requires_grad_(False)

    def prepare_student(self, student: nn.Module, first_windows: Callable[[int], torch.Tensor],
                        log: Callable[[str], None]) -> None:
        """With distill.gate_init, set the student's gate biases from the teacher's spans on the first
        distill.gate_init_sequences training windows (first_windows(n) -> input_ids [n, T]); in the stages
        "feature_map" and "attention", freeze all but distill.train_params."""
        dc = self.cfg
        if dc.gate_init == "teacher_span":
            ids = first_windows(dc.gate_init_sequences).to(next(self.teacher.parameters()).device)
            try:
                spans = init_gates_from_spans(student, self.teacher, ids, dc.gate_init_spread, self.batch_size,
                                              sinks=dc.gate_init_sinks)
            except ValueError as e:
                raise InputError(f"config key distill.gate_init = \"teacher_span\": {e}") from None
            log(f"gate init: teacher attention spans {spans.min():.1f}-{spans.max():.1f} tokens (median "
                f"{spans.median():.1f}) over {len(ids)} windows, the weight on their first {dc.gate_init_sinks} "
                "tokens left out")
        if dc.stage in ("feature_map", "attention"):
            try:
                attention_transfer_parameters(student, tuple(dc.train_params))
            except ValueError as e:
                raise InputError(f"config key distill.train_params = {dc.train_params}: {e}") from None

    def loss(self, student: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of the configured stage on one batch (student: the plain, unwrapped model)."""
        dc, ids = self.cfg, batch["input_ids"]
        if dc.stage == "feature_map":
            return feature_map_loss(student, self.teacher, ids)
        if dc.stage == "attention":
            return attention_transfer_loss(student, self.teacher, ids, answer=batch.get("answer"),
                                           answer_weight=dc.answer_weight, relative=dc.layer_loss == "relative",
                                           target=dc.layer_target)
        return logit_distillation_loss(student, self.teacher, ids, temperature=dc.temperature,
                                       answer=batch.get("answer"), answer_weight=dc.answer_weight)


register_model_type("t2r", LoadedModelType(source="teacher", accept=None, load=converted_student))
register_distillation(T2RDistillation)
