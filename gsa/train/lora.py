"""LoRA for the trainer's [lora] section, through peft (`pip install -e '.[lora]'`): adapters injected into the
model in place (its class and every other module unchanged), and the checkpoint form of an adapted model: the merged
plain model, which loads anywhere, plus the adapters and the frozen weights under them, for an exact resume.

peft names an adapted layer's tensors `<layer>.base_layer.weight` (and .bias), `<layer>.lora_A.default.weight`
[rank, in] and `<layer>.lora_B.default.weight` [out, rank]; its delta is (alpha / rank) B A.
"""

from __future__ import annotations

import torch
from torch import nn

from gsa.errors import InputError

from .config_distill import LoraConfig

ADAPTER = "default"  # peft's name for the one adapter
_BASE = ".base_layer."


def is_adapter_tensor(name: str) -> bool:
    """Whether a state-dict key belongs to an adapted layer's LoRA form (its adapters or the weights under them)."""
    return _BASE in name or ".lora_A." in name or ".lora_B." in name


def apply_lora(model: nn.Module, cfg: LoraConfig) -> list[nn.Parameter]:
    """Inject LoRA adapters into every nn.Linear of `model` whose name ends in one of cfg.targets; freeze everything
    but the adapters and the parameters with a name part in cfg.train_full. Returns the trainable parameters.
    InputError naming lora.targets / lora.train_full when they match nothing, or when peft is missing."""
    try:
        from peft import LoraConfig as PeftLoraConfig
        from peft import inject_adapter_in_model
    except ImportError:
        raise InputError("lora.rank > 0 needs peft: pip install -e '.[lora]'") from None
    config = PeftLoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                            target_modules=list(cfg.targets), bias="none")
    try:
        inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    except ValueError as e:  # peft: no module matched
        raise InputError(f"config key lora.targets = {cfg.targets} matches no linear layer of the model ({e})") from None
    full = set(cfg.train_full)
    found = set()
    trainable = []
    for name, p in model.named_parameters():
        hit = full & set(name.split("."))
        found |= hit
        keep = ".lora_A." in name or ".lora_B." in name or bool(hit)
        p.requires_grad_(keep)
        if keep:
            trainable.append(p)
    if full - found:
        raise InputError(f"config key lora.train_full names {sorted(full - found)}, which no parameter of the model "
                         "has in its name")
    return trainable


def split_lora_state(state: dict[str, torch.Tensor], scaling: float
                     ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A LoRA model's state dict -> (the merged plain state dict: each adapted layer's weight = W + scaling B A,
    computed in float32 and cast back, under the layer's own name; the adapter tensors, keys as they are)."""
    adapters = {k: v for k, v in state.items() if is_adapter_tensor(k)}
    plain = {k: v for k, v in state.items() if k not in adapters}
    for key, w in adapters.items():
        if _BASE not in key:
            continue
        layer, kind = key.split(_BASE)
        if kind == "weight":
            a = adapters[f"{layer}.lora_A.{ADAPTER}.weight"].float()
            b = adapters[f"{layer}.lora_B.{ADAPTER}.weight"].float()
            w = (w.float() + scaling * (b @ a)).to(w.dtype)
        plain[f"{layer}.{kind}"] = w
    return plain, adapters


def join_lora_state(plain: dict[str, torch.Tensor], adapters: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """split_lora_state's two halves -> the LoRA model's state dict (the merged weights of adapted layers dropped:
    their base and adapters come from `adapters`)."""
    merged = {key.replace(_BASE, ".") for key in adapters if _BASE in key}
    return {**{k: v for k, v in plain.items() if k not in merged}, **adapters}
