"""Models the trainer can build from the ``[model]`` section, and how a batch is fed to each.

- ``type = "gsa"``: ``gsa.GSAForCausalLM``; every other key is a ``GSAConfig`` field (ablations are config
  fields too). Packed batches are passed as ``cu_seqlens``.
- ``type = "llama"``: ``transformers.LlamaForCausalLM``, the softmax-attention Transformer baseline; every
  other key is a ``LlamaConfig`` field (unknown ones raise). Packed batches are passed as ``position_ids``
  that restart at each document, from which transformers builds a block-diagonal causal mask.

- ``type = "zoology"``: ``gsa.models.zoology.ZoologyForCausalLM``, Zoology's MQAR model (gated convolutions
  alternating with a GSA, ABC or attention mixer, no MLP) for reproducing the GSA paper's recall setup; every other
  key is a ``ZoologyConfig`` field. Unpacked batches only (MQAR).

- ``type = "pretrained"``: a saved GSA model (``path = DIR``), e.g. the output of a first finetuning stage.
- ``type = "t2r"``: a GSA student converted from a Llama-family checkpoint (``teacher = DIR``), registered by
  gsa.convert (gsa.convert.training; gsa.train.registry says how): like "pretrained", a type that loads a directory.

``vocab_size`` comes from the data (tokenizer or MQAR vocabulary) unless the section sets it; a loaded model's
vocabulary must cover the data's.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gsa.errors import InputError, one_line
from gsa.models.configuration import GSAConfig

from .registry import LoadedModelType, registered_model_type


# the types built from scratch from the section's own keys; "pretrained" and registered types load a directory
BUILT_TYPES = ("gsa", "llama", "zoology")


def build_model(model_cfg: dict[str, Any], vocab_size: int, eos_id: int | None = None) -> nn.Module:
    """The model the ``[model]`` section describes; InputError naming the key when the section is invalid."""
    params = dict(model_cfg)
    kind = params.pop("type")
    if kind not in BUILT_TYPES:
        return _load_model(model_cfg, vocab_size)
    params.setdefault("vocab_size", vocab_size)
    if isinstance(params["vocab_size"], int) and params["vocab_size"] < vocab_size:  # a non-int: the config says so
        raise InputError(f"model.vocab_size={params['vocab_size']} is smaller than the data's vocabulary "
                         f"({vocab_size})")
    if eos_id is not None:
        params.setdefault("eos_token_id", eos_id)
        params.setdefault("pad_token_id", eos_id)
        params.setdefault("bos_token_id", None)
    config, model_class = _model_config(kind, params)
    return model_class(config)


def _model_config(kind: str, params: dict[str, Any]):
    """(config, model class) for a built-from-scratch model; the config class's own validation errors (the only
    code run here) are the section's errors, reported as InputError."""
    if kind == "gsa":
        from gsa.models import GSAConfig as config_class
        from gsa.models import GSAForCausalLM as model_class
    elif kind == "zoology":
        from gsa.models.zoology import ZoologyConfig as config_class
        from gsa.models.zoology import ZoologyForCausalLM as model_class
    else:
        from transformers import LlamaConfig as config_class
        from transformers import LlamaForCausalLM as model_class

        known = set(inspect.signature(config_class.__init__).parameters) | set(config_class().to_dict())
        unknown = sorted(set(params) - known)
        if unknown:
            raise InputError(f"unknown LlamaConfig key(s) in [model]: {unknown}")
        params.setdefault("use_cache", False)  # a cache would also disable packed-sequence masks
    try:
        return config_class(**params), model_class
    except (TypeError, ValueError) as e:
        raise InputError(f"[model] {one_line(e)}") from None


def check_model_section(model_cfg: dict[str, Any]) -> None:
    """InputError for an invalid ``[model]`` section of a model built from scratch, or for a type that loads a
    directory but is not registered, before any data is read (the data's vocabulary is not known yet: a placeholder
    stands in unless the section sets vocab_size)."""
    params = dict(model_cfg)
    kind = params.pop("type")
    if kind not in BUILT_TYPES:
        loaded_model_type(kind)
        return
    params.setdefault("vocab_size", 1 << 16)
    _model_config(kind, params)


def _load_pretrained(path: str, options: dict[str, Any]) -> nn.Module:
    if options:
        raise InputError(f"unknown key(s) for [model] type = 'pretrained': {sorted(options)} (only path)")
    from gsa.models import GSAForCausalLM

    return GSAForCausalLM.from_pretrained(path)


PRETRAINED = LoadedModelType(source="path", accept=(GSAConfig.model_type,), load=_load_pretrained)


def loaded_model_type(kind: str) -> LoadedModelType:
    """How a ``[model]`` type that loads a directory ("pretrained" or a registered one) makes its model."""
    return PRETRAINED if kind == "pretrained" else registered_model_type(kind)


def model_source(model_cfg: dict[str, Any]) -> str:
    """The directory a ``[model]`` section of a type that loads one names (type "pretrained": path)."""
    kind = model_cfg["type"]
    key = loaded_model_type(kind).source
    if not isinstance(model_cfg.get(key), str):
        raise InputError(f"[model] type = {kind!r} needs {key} = DIR, got {model_cfg.get(key)!r}")
    return model_cfg[key]


def _load_model(model_cfg: dict[str, Any], vocab_size: int) -> nn.Module:
    loaded = loaded_model_type(model_cfg["type"])
    src = model_source(model_cfg)
    model = loaded.load(src, {k: v for k, v in model_cfg.items() if k not in ("type", loaded.source)})
    if model.config.vocab_size < vocab_size:
        raise InputError(f"the model's vocabulary ({model.config.vocab_size}) is smaller than the data's "
                         f"({vocab_size})")
    return model.float()


def model_inputs(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keyword arguments for ``model(**...)`` from a batch made by ``gsa.data.pack_batch`` or MQAR."""
    out = {"input_ids": batch["input_ids"], "labels": batch["labels"]}
    if "cu_seqlens" in batch:
        if unwrap(model).config.model_type == GSAConfig.model_type:
            out["cu_seqlens"] = batch["cu_seqlens"]
        else:
            out["position_ids"] = batch["position_ids"]
    return out


def labelled_positions_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The mean next-token cross-entropy over the labelled positions, with the LM head run at those positions only.

    Equal to ``model(input_ids, labels=labels).loss`` (both GSA and Llama: ``model.model`` then ``model.lm_head``)
    but without the [B, T, vocab] logits, which dominate a small model's step when few positions are labelled
    (MQAR: 64 of 512). Calls the inner modules directly, so it is for one process (DDP/FSDP hook the root's forward).
    """
    core = unwrap(model)
    hidden = core.model(input_ids=batch["input_ids"]).last_hidden_state  # [B, T, d]
    target = batch["labels"][:, 1:]
    keep = target != -100
    logits = core.lm_head(hidden[:, :-1][keep])  # [n, vocab]
    return F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), target[keep])


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model under DDP / torch.compile wrappers (FSDP2 shards in place and needs no unwrapping)."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def blocks(model: nn.Module) -> nn.ModuleList:
    """The list of decoder blocks (``model.model.layers`` for both GSA and Llama)."""
    layers = getattr(getattr(unwrap(model), "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{type(unwrap(model)).__name__} has no model.layers ModuleList of blocks")
    return layers


def _checkpointed(forward, *args, **kwargs):
    return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each block's activations in the backward pass instead of storing them."""
    for block in blocks(model):
        block.forward = functools.partial(_checkpointed, block.forward)


# Graphs one kind of block may need before Dynamo gives up on it: train and eval (grad mode), each first for the
# shapes seen and then with dynamic ones, with room for a shape a kernel launch specialises on. PyTorch's default
# budget, 8 a code object (`torch._dynamo.config.recompile_limit`), is shared by every block, since all instances of
# a class share one forward; past it Dynamo runs the block eagerly, with only a warning.
GRAPHS_PER_BLOCK_KIND = 8


def _block_kind(block: nn.Module) -> tuple[type, ...]:
    """What Dynamo's guards tell blocks apart by: their own and their submodules' classes."""
    return tuple(type(m) for m in block.modules())


def _compile_takes_recompile_limit() -> bool:
    """Whether this PyTorch's torch.compile takes a recompile budget of its own (PyTorch 2.13 does)."""
    return "recompile_limit" in inspect.signature(torch.compile).parameters


def apply_compile(model: nn.Module, backend: Any = None) -> None:
    """torch.compile each block (smaller graphs than the whole model, compiled once and reused).

    Blocks of several kinds (a Zoology model alternates gated convolutions with the mixer; a hybrid GSA model has
    attention layers) share one forward and so one recompile budget: it is raised to GRAPHS_PER_BLOCK_KIND per kind,
    through torch.compile's own `recompile_limit` where this PyTorch has it and Dynamo's global setting otherwise
    (never lowered). backend: torch.compile's (None: inductor)."""
    layers = blocks(model)
    limit = GRAPHS_PER_BLOCK_KIND * len({_block_kind(b) for b in layers})
    options: dict[str, Any] = {} if backend is None else {"backend": backend}
    if _compile_takes_recompile_limit():
        options["recompile_limit"] = limit
    else:
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
    for block in layers:
        block.compile(**options)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices (linear and embedding weights); never norms or biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
