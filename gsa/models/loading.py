"""Loading saved models without silent damage: no tensor left at its random init, no corrupted weight file, no
foreign architecture taken for ours.

- `save_pretrained` of a GSA or Zoology model also writes ``weights.sha256.json``, the size and SHA-256 of each weight
  file; `from_pretrained` checks the files against it when it is there (models saved without one load as before).
- `from_pretrained` refuses a checkpoint whose tensors do not fill the model exactly, naming the keys: missing tensors
  (transformers would leave them at their random init), unexpected ones (it would drop them) and shape mismatches.
  With ``output_loading_info=True`` it returns transformers' report instead of raising for missing or unexpected
  tensors, for a caller who means to fill them itself.
- `check_model_dir`: a directory holding a readable config.json of a model type the caller accepts.
- `load_pretrained`: what the `gsa` commands load with: all of the above for any causal LM (a GSA model, the Zoology
  harness, a Transformer baseline trained by `gsa train`), then a check that every weight is finite.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import torch

from gsa.errors import InputError

WEIGHTS_MANIFEST = "weights.sha256.json"
WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json")
CONVERTIBLE = ("llama", "mistral", "qwen2")  # what `gsa convert` turns into a GSA model


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_weights_manifest(directory: str | os.PathLike) -> None:
    """Record the size and SHA-256 of every weight file in `directory` (written after the files themselves)."""
    directory = Path(directory)
    files = {p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)}
             for p in sorted(directory.iterdir()) if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)}
    tmp = directory / f".{WEIGHTS_MANIFEST}.tmp"
    tmp.write_text(json.dumps({"files": files}, indent=1))
    os.replace(tmp, directory / WEIGHTS_MANIFEST)


def verify_weights_manifest(directory: str | os.PathLike) -> None:
    """Check the weight files of `directory` against its weights.sha256.json, if it has one; InputError if not."""
    directory = Path(directory)
    manifest = directory / WEIGHTS_MANIFEST
    if not manifest.is_file():
        return
    try:
        files = json.loads(manifest.read_text())["files"]
        records = [(name, int(rec["size"]), str(rec["sha256"])) for name, rec in files.items()]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{manifest} is unreadable ({type(e).__name__}: {e})") from None
    for name, size, sha in records:
        path = directory / name
        if not path.is_file():
            raise InputError(f"{path} is missing (listed in {WEIGHTS_MANIFEST}, written when the model was saved)")
        if path.stat().st_size != size:
            raise InputError(f"{path} has {path.stat().st_size} bytes, {size} when it was saved: the file is "
                             "truncated or was replaced")
        if file_sha256(path) != sha:
            raise InputError(f"{path} is corrupted: its SHA-256 differs from the one recorded when it was saved "
                             f"({WEIGHTS_MANIFEST}; delete that file to load a deliberately changed model)")


def read_model_config(directory: str | os.PathLike) -> dict:
    """config.json of a model directory, as a dict with a model_type; InputError saying what is wrong otherwise."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory} is not a directory (a model saved with save_pretrained is one)")
    path = directory / "config.json"
    if not path.is_file():
        raise InputError(f"{directory} has no config.json: not a model saved with save_pretrained")
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise InputError(f"{path} has no model_type: not a config written by save_pretrained")
    return config


def check_model_dir(directory: str | os.PathLike, accept: Iterable[str] | None = None) -> str:
    """The model type of a saved model directory, after checking that it is one and that it is of a type in `accept`
    (None: ours or any that transformers knows). InputError naming what it is and what to do otherwise."""
    from transformers import CONFIG_MAPPING

    from gsa.models.configuration import FLA_ONLY_KEYS, LEGACY_MODEL_TYPE, GSAConfig, looks_like_fla

    config = read_model_config(directory)
    model_type = config["model_type"]
    if model_type == LEGACY_MODEL_TYPE:  # fla's GSA models, and ours saved before they had their own name
        if looks_like_fla(config):
            raise InputError(f"{directory} looks like a flash-linear-attention GSA checkpoint (config keys "
                             f"{', '.join(sorted(FLA_ONLY_KEYS & set(config)))}): convert it with "
                             f"`gsa convert --from {directory} --to OUT`")
        model_type = GSAConfig.model_type
    accept = None if accept is None else tuple(accept)
    if accept is not None and model_type not in accept:
        todo = (f": convert it with `gsa convert --from {directory} --to OUT`"
                if model_type in CONVERTIBLE and GSAConfig.model_type in accept else "")
        raise InputError(f"{directory} holds a {model_type!r} model where a {' or '.join(map(repr, accept))} one is "
                         f"expected{todo}")
    if model_type not in CONFIG_MAPPING:
        raise InputError(f"{directory}: config.json has model_type {model_type!r}, which neither gsa nor transformers "
                         "knows")
    return model_type


def _names(keys: Iterable, limit: int = 5) -> str:
    keys = sorted(keys)
    shown = ", ".join(str(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def check_loading_info(info: dict, source, missing: bool = True, unexpected: bool = True,
                       mismatched: bool = True) -> None:
    """Refuse (InputError) what transformers' loading report `info` lists, per kind."""
    problems = []
    if missing and info["missing_keys"]:
        problems.append(f"missing tensors {_names(info['missing_keys'])}")
    if unexpected and info["unexpected_keys"]:
        problems.append(f"unexpected tensors {_names(info['unexpected_keys'])}")
    if mismatched and info["mismatched_keys"]:
        shapes = (f"{key} {tuple(saved)} saved, {tuple(wanted)} in the model"
                  for key, saved, wanted in info["mismatched_keys"])
        problems.append(f"tensors of another shape: {_names(shapes, 3)}")
    if problems:
        raise InputError(f"{source}: the weights do not fit the model its config.json describes ("
                         + "; ".join(problems) + "): a config edited after saving, or an incomplete checkpoint")


def _not_a_load_report(record: logging.LogRecord) -> bool:
    return "LOAD REPORT" not in str(record.msg)


@contextlib.contextmanager
def _quiet_load_report():
    """Hide transformers' printed loading report (only that) while the caller raises a one-line error naming the
    same keys."""
    logger = logging.getLogger("transformers.modeling_utils")
    logger.addFilter(_not_a_load_report)
    try:
        yield
    finally:
        logger.removeFilter(_not_a_load_report)


class VerifiedLoading:
    """Mixin of our PreTrainedModel classes (before PreTrainedModel): save_pretrained records the weight files'
    hashes, from_pretrained checks them and refuses weights that do not fill the model (module docstring)."""

    def save_pretrained(self, save_directory: str | os.PathLike, is_main_process: bool = True, **kwargs) -> None:
        super().save_pretrained(save_directory, is_main_process=is_main_process, **kwargs)
        if is_main_process:
            write_weights_manifest(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        local = None
        if pretrained_model_name_or_path is not None:
            local = Path(pretrained_model_name_or_path) / kwargs.get("subfolder", "")
            local = local if local.is_dir() else None
        if local is not None:
            if kwargs.get("config") is None:
                check_model_dir(local, accept=[cls.config_class.model_type])
            verify_weights_manifest(local)
        report = kwargs.pop("output_loading_info", False)
        shapes_must_match = not kwargs.pop("ignore_mismatched_sizes", False)
        with contextlib.nullcontext() if report else _quiet_load_report():
            model, info = super().from_pretrained(pretrained_model_name_or_path, *model_args,
                                                  output_loading_info=True, ignore_mismatched_sizes=True, **kwargs)
        check_loading_info(info, pretrained_model_name_or_path, missing=not report, unexpected=not report,
                           mismatched=shapes_must_match)
        return (model, info) if report else model


def check_finite(model: torch.nn.Module, source) -> None:
    """InputError naming the tensors of `model` that hold NaN or infinite values."""
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise InputError(f"{source}: {_names(bad)} {'holds' if len(bad) == 1 else 'hold'} NaN or infinite values "
                         "(saved from a diverged run?): the model would compute garbage")


def resolve_device(spec: str | None, flag: str = "--device") -> torch.device:
    """torch.device(spec) (None: cuda if available, else cpu), checked to exist on this machine; InputError naming
    `flag` otherwise."""
    if spec is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError, TypeError):
        raise InputError(f"{flag} {spec!r} is not a device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"{flag} {spec}: this machine has no CUDA device (torch.cuda.is_available() is False)")
        if device.index is not None and device.index >= count:
            raise InputError(f"{flag} {spec}: this machine has {count} CUDA device(s)")
    elif device.type != "cpu":
        raise InputError(f"{flag} {spec}: only cpu and cuda devices are supported")
    return device


def load_pretrained(directory: str | os.PathLike, accept: Iterable[str] | None = None,
                    dtype: torch.dtype | None = None) -> torch.nn.Module:
    """A saved causal LM with every check above (`accept`: model types allowed, None: any known one); InputError
    naming the problem otherwise. (Our models verify their weights manifest in from_pretrained.)"""
    from transformers import AutoModelForCausalLM

    import gsa.models  # noqa: F401  (registers our model types with the Auto classes)

    check_model_dir(directory, accept)
    with _quiet_load_report():
        model, info = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, output_loading_info=True,
                                                           ignore_mismatched_sizes=True)
    check_loading_info(info, directory)
    check_finite(model, directory)
    return model
