"""fla (flash-linear-attention) GSA checkpoints <-> GSAForCausalLM, with the same function.

The published GSA models (the paper's 1.3B and 2.7B) are fla checkpoints: `model_type` "gsa", fla's config fields
and weight names. `from_fla(src)` builds the GSAForCausalLM that computes what fla 0.6.0's `GSAForCausalLM`
computes from the same weights (config mapping: gsa.convert.fla_config); `convert_fla(src, dst)` saves it (what
`gsa convert` runs on an fla directory); `to_fla(model, dst)` writes one of ours back in fla's format. fla itself
is not needed for any of them: configs are plain dicts and weights are read and written with safetensors.

Weights, fla -> ours (every tensor copied bitwise, in its own dtype; the convolutions' [C, 1, W] become [C, W]):

    model.embeddings.weight                     -> model.embed_tokens.weight
    model.layers.i.attn.{q,k,v}_conv1d.weight   -> model.layers.i.attn.{q,k,v}_conv.weight
    model.layers.i.attn.g_norm.weight           -> model.layers.i.attn.o_norm.weight   (absent without gain)
    everything else (attn_norm, attn.{q,k,v,f,o}_proj, mlp_norm, mlp.{gate,up,down}_proj, model.norm, lm_head)
                                                -> the same name

Both directions check that every tensor has exactly one target and every target is filled. Directly loading an
fla directory with `GSAForCausalLM.from_pretrained` raises with how to convert it instead (see docs/convert.md:
conversion checks the whole checkpoint once, and the converted directory then loads everywhere without fla).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from torch import nn

from gsa.convert.fla_config import FLA_MODEL_TYPE, fla_config_from, gsa_config_from_fla
from gsa.convert.transformer_config import UnsupportedModelError, rename
from gsa.models import GSAForCausalLM
from gsa.models.configuration import looks_like_fla
from gsa.nn import RMSNorm

# fla name -> our name (regex substitution); a tensor matching none of them is an error.
_FROM_FLA = [
    (r"^model\.embeddings\.weight$", r"model.embed_tokens.weight"),
    (r"^model\.layers\.(\d+)\.attn\.([qkv])_conv1d\.(weight|bias)$", r"model.layers.\1.attn.\2_conv.\3"),
    (r"^model\.layers\.(\d+)\.attn\.g_norm\.weight$", r"model.layers.\1.attn.o_norm.weight"),
    (r"^model\.layers\.(\d+)\.attn\.([qkvfo])_proj\.weight$", r"model.layers.\1.attn.\2_proj.weight"),
    (r"^model\.layers\.(\d+)\.(attn_norm|mlp_norm)\.weight$", r"model.layers.\1.\2.weight"),
    (r"^model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight$", r"model.layers.\1.mlp.\2_proj.weight"),
    (r"^(model\.norm|lm_head)\.weight$", r"\1.weight"),
]
_TO_FLA = [
    (r"^model\.embed_tokens\.weight$", r"model.embeddings.weight"),
    (r"^model\.layers\.(\d+)\.attn\.([qkv])_conv\.(weight|bias)$", r"model.layers.\1.attn.\2_conv1d.\3"),
    (r"^model\.layers\.(\d+)\.attn\.o_norm\.weight$", r"model.layers.\1.attn.g_norm.weight"),
    (r"^(.*)$", r"\1"),
]
_CONV_WEIGHT = re.compile(r"_conv(1d)?\.weight$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json")


_NO_COUNTERPART = "cannot convert: the fla tensor {name!r} has no GSA counterpart"


def is_fla_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is a directory holding an fla GSA config.json (model_type "gsa" with fla's fields)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    d = json.loads(config.read_text())
    return d.get("model_type") == FLA_MODEL_TYPE and looks_like_fla(d)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a save_pretrained directory: model.safetensors, sharded safetensors (with their index), or
    pytorch_model.bin (sharded or not), on the CPU in the dtypes stored."""
    from safetensors.torch import load_file

    path = Path(path)
    for index_name, load in (("model.safetensors.index.json", load_file),
                             ("pytorch_model.bin.index.json", lambda f: torch.load(f, map_location="cpu",
                                                                                    weights_only=True))):
        index = path / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return {k: v for shard in shards for k, v in load(path / shard).items()}
    if (path / "model.safetensors").is_file():
        return load_file(path / "model.safetensors")
    if (path / "pytorch_model.bin").is_file():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{path}: no model.safetensors, pytorch_model.bin or sharded index")


def from_fla(src: str | os.PathLike | nn.Module, dtype: torch.dtype | None = None) -> GSAForCausalLM:
    """The GSAForCausalLM with the function of an fla GSA model: `src` an fla checkpoint directory, or a loaded
    fla `GSAForCausalLM` (anything with `.config.to_dict()` and `.state_dict()`). dtype: cast every tensor to it;
    None keeps each tensor's stored dtype (so a float32 output-norm gain beside bf16 weights stays float32).
    Returns the model in eval mode on the CPU. Raises UnsupportedModelError naming what cannot be reproduced."""
    module = isinstance(src, nn.Module)
    fla_config = src.config.to_dict() if module else json.loads((Path(src) / "config.json").read_text())
    config = gsa_config_from_fla(fla_config)  # refuses before any weight is read
    fla_state = {k: v.detach().cpu() for k, v in src.state_dict().items()} if module else read_state_dict(src)
    state = {}
    for name, tensor in fla_state.items():
        if config.tie_word_embeddings and name == "lm_head.weight":
            continue  # tied: the head is the embedding, as fla's model (and transformers) loads it
        tensor = tensor.squeeze(1) if _CONV_WEIGHT.search(name) else tensor
        state[rename(name, _FROM_FLA, _NO_COUNTERPART)] = tensor if dtype is None else tensor.to(dtype)
    if config.tie_word_embeddings and "model.embed_tokens.weight" in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]

    with torch.device("meta"):  # no random init of weights about to be replaced
        model = GSAForCausalLM(config)
    expected = set(model.state_dict())
    if set(state) != expected:
        raise UnsupportedModelError(f"cannot convert: missing {sorted(expected - set(state))[:4]}, unexpected "
                                    f"{sorted(set(state) - expected)[:4]}")
    model.load_state_dict(state, strict=True, assign=True)
    for module in model.modules():  # a norm without gain keeps fixed ones in a (non-persistent, still meta) buffer
        if isinstance(module, RMSNorm) and not module.elementwise_affine:
            module.to_empty(device="cpu", recurse=False)
            module.reset_parameters()
            module.to(dtype or model.model.embed_tokens.weight.dtype)
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.eval()


def to_fla_state_dict(model: GSAForCausalLM) -> tuple[dict, dict[str, torch.Tensor]]:
    """(fla config dict, fla state dict) of a GSAForCausalLM whose function fla's model can compute (else an
    UnsupportedModelError naming each option it cannot). Tensors are the model's own, renamed (conv weights as
    [C, 1, W] views); a tied head is left out, as transformers saves it."""
    config = fla_config_from(model.config)
    state = {}
    for name, tensor in model.state_dict().items():
        if model.config.tie_word_embeddings and name == "lm_head.weight":
            continue
        state[rename(name, _TO_FLA, _NO_COUNTERPART)] = tensor.unsqueeze(1) if _CONV_WEIGHT.search(name) else tensor
    return config, state


def _copy_tokenizer(src: Path, dst: Path) -> None:
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def to_fla(model: GSAForCausalLM, dst: str | os.PathLike, tokenizer_from: str | os.PathLike | None = None) -> Path:
    """Write `model` as an fla GSA checkpoint (config.json + model.safetensors) that fla's
    `GSAForCausalLM.from_pretrained(dst)` loads with the same function; tokenizer files are copied from
    `tokenizer_from` when given. Returns dst."""
    import transformers
    from safetensors.torch import save_file

    config, state = to_fla_state_dict(model)
    dtypes = {t.dtype for t in state.values()}
    config["dtype"] = str(next(iter(dtypes))).removeprefix("torch.") if len(dtypes) == 1 else None
    config["transformers_version"] = transformers.__version__
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, dst / "model.safetensors", metadata={"format": "pt"})
    (dst / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if tokenizer_from is not None:
        _copy_tokenizer(Path(tokenizer_from), dst)
    return dst


def convert_fla(src: str | os.PathLike, dst: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """from_fla(src, dtype) saved with save_pretrained into dst, with src's tokenizer files. Returns dst."""
    src, dst = Path(src), Path(dst)
    model = from_fla(src, dtype)
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    _copy_tokenizer(src, dst)
    return dst
