"""The training config's [distill] (finetuning against a Transformer teacher, T2R) and [lora] sections and their
checks (gsa.train.config reads them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gsa.errors import InputError

if TYPE_CHECKING:
    from .config import Config


@dataclass
class DistillConfig:
    """Transformer-to-GSA finetuning against the teacher (T2R); off while `teacher` is empty.

    stage "feature_map": each student layer's feature-mapped causal softmax matches the teacher layer's attention
    weights (KL; gsa.convert.attention_weights.feature_map_loss, the Hedgehog fit), training only `train_params`
    (q_map, k_map: the maps of model.feature_map = "learned"; q_proj, k_proj); stage "attention": each student
    attention layer matches the teacher layer's attention output (hidden-state MSE), training only the attention
    parameters in `train_params`; stage "logits": KL to the teacher's logits (temperature), end to end. The teacher
    runs in the same process, frozen.

    gate_init = "teacher_span" sets every student layer's forget-gate bias, before training, so that each kv head's
    slots start with its teacher heads' mean attention distance over the first `gate_init_sequences` training
    windows as their decay horizon (gsa.convert.gate_init; needs a student with gate_bias = true), spread over the
    slots by +-gate_init_spread in logits. The weight on each window's first `gate_init_sinks` tokens is left out of
    the distances (attention sinks: gsa.convert.attention_weights.mean_distance).
    """

    teacher: str = ""  # a local Hugging Face checkpoint directory of the Llama family
    stage: str = "logits"  # "feature_map" | "attention" | "logits"
    temperature: float = 1.0
    train_params: list[str] = field(default_factory=lambda: ["f_proj"])  # stages "feature_map" and "attention"
    # with data.passkey_fraction: the weight of the passkey answer positions, added to the stage's loss: stage "logits"
    # the student's cross-entropy there, stage "attention" each layer's output MSE averaged over them alone
    answer_weight: float = 0.0
    gate_init: str = ""  # "" (as converted or loaded) | "teacher_span"
    gate_init_sequences: int = 16
    gate_init_spread: float = 0.0
    gate_init_sinks: int = 4  # the first tokens whose attention weight the spans leave out (attention sinks)
    # stage "attention": "mse" (each layer's output MSE, averaged over layers) or "relative" (each divided by its
    # teacher output's mean square first, so that every layer weighs alike)
    layer_loss: str = "mse"
    # stage "attention": what each layer matches: "attention" (the attention output, on the teacher's attention input)
    # or "block" (the whole block's output, MLP included, on the teacher's residual stream)
    layer_target: str = "attention"


@dataclass
class LoraConfig:
    """Low-rank adapters (peft's LoRA, `pip install -e '.[lora]'`) instead of full finetuning; off while rank = 0.

    Every nn.Linear whose name ends in one of `targets` gets W x + (alpha / rank) B A x with A [rank, in] random and
    B [out, rank] zero, W frozen; every other parameter is frozen too except those with a name part in `train_full`
    (e.g. f_proj, q_map, k_map: new weights that have no pretrained value to stay near). Checkpoints save the merged
    model (W + (alpha / rank) B A, loadable as it is) and the adapters beside it for resuming; the run's model/ is
    the merged one. For stage "logits" or plain language-model training (the attention stages train their own
    parameter choice in full).
    """

    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    train_full: list[str] = field(default_factory=list)



FEATURE_MAP_PARAMS = ("q_map", "k_map", "q_proj", "k_proj")  # what the attention weights depend on


def check_distill(cfg: Config) -> None:
    """InputError naming the [distill] key that is wrong or does not fit the rest of the config."""
    dc = cfg.distill
    if dc.teacher and (cfg.data.kind != "text" or cfg.data.documents):
        raise InputError("distillation reads plain text windows: set data.kind = \"text\" and data.documents = "
                         "false (the teacher has no packed-sequence path here)")
    if dc.answer_weight:
        if dc.answer_weight < 0:
            raise InputError(f"config key distill.answer_weight must be >= 0, got {dc.answer_weight}")
        if not (dc.teacher and cfg.data.passkey_fraction):
            raise InputError("distill.answer_weight weighs the passkey answers in a distillation loss: it needs "
                             "distill.teacher and data.passkey_fraction > 0")
    if dc.stage == "feature_map" and (not dc.train_params or set(dc.train_params) - set(FEATURE_MAP_PARAMS)):
        raise InputError(f"config key distill.train_params: stage \"feature_map\" fits the attention weights, which "
                         f"only {list(FEATURE_MAP_PARAMS)} change; got {dc.train_params}")
    if dc.layer_loss != "mse" and dc.stage != "attention":
        raise InputError(f"config key distill.layer_loss weighs the layers of stage \"attention\"; the stage is "
                         f"{dc.stage!r}")
    if dc.layer_target != "attention" and dc.stage != "attention":
        raise InputError(f"config key distill.layer_target is stage \"attention\"'s; the stage is {dc.stage!r}")
    if dc.gate_init:
        if not dc.teacher:
            raise InputError("config key distill.gate_init measures the teacher's attention spans: set distill.teacher")
        if dc.gate_init_sequences < 1 or dc.gate_init_spread < 0 or dc.gate_init_sinks < 0:
            raise InputError(f"config keys distill.gate_init_sequences must be >= 1, distill.gate_init_spread >= 0 "
                             f"and distill.gate_init_sinks >= 0, got {dc.gate_init_sequences}, "
                             f"{dc.gate_init_spread}, {dc.gate_init_sinks}")


def check_lora(cfg: Config) -> None:
    """InputError naming the [lora] key that is wrong or does not fit the rest of the config."""
    lc = cfg.lora
    if lc.rank < 0:
        raise InputError(f"config key lora.rank must be >= 0 (0: full finetuning), got {lc.rank}")
    if not lc.rank:
        return
    if not lc.alpha > 0 or not 0 <= lc.dropout < 1:
        raise InputError(f"config keys lora.alpha must be positive and lora.dropout in [0, 1), got {lc.alpha}, "
                         f"{lc.dropout}")
    if not lc.targets:
        raise InputError("config key lora.targets must name at least one linear layer (e.g. \"q_proj\")")
    if cfg.distill.teacher and cfg.distill.stage != "logits":
        raise InputError(f"config key lora.rank > 0 with distill.stage = {cfg.distill.stage!r}: that stage trains "
                         "distill.train_params in full; use LoRA with stage \"logits\" (or without distillation)")
