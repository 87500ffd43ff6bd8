"""Checks of a training config before any work: the files it names are there, its [model] section makes a model, and
its output directory holds no earlier run unless the run resumes or replaces it.

The output directory rule: a directory with checkpoints or a trained model/ from an earlier run is refused unless
`resume` (continue from its newest valid checkpoint) or `overwrite` (delete that run's files, then start at step 0).
Training into it anew would mix two runs: the old, later-numbered checkpoints would outlive the new ones.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from gsa.data import expand_sources
from gsa.errors import InputError, one_line

from . import checkpoint as ckpt
from .config import Config
from .model import BUILT_TYPES, check_model_section, loaded_model_type, model_source
from .registry import distillation_factory

# what a run writes into its output directory (and --overwrite deletes; nothing else there is touched)
RUN_FILES = ("checkpoints", "model", ".tmp-model", "metrics.jsonl", "config.json", "tensorboard")


def earlier_run(output_dir: str | os.PathLike) -> str | None:
    """What of an earlier run `output_dir` holds (for a message), or None."""
    found = ckpt.list_checkpoints(output_dir)
    if found:
        return f"checkpoints up to {found[-1].name}"
    if (Path(output_dir) / "model").is_dir():
        return "a trained model/"
    return None


def check_output_dir(output_dir: str | os.PathLike, resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise InputError("resume continues the run in the output directory and overwrite deletes it: choose one")
    found = earlier_run(output_dir)
    if found and not (resume or overwrite):
        raise InputError(f"output directory {output_dir} holds an earlier run ({found}): pass --resume to continue "
                         "it, --overwrite to replace it, or another --output-dir")


def clear_run(output_dir: str | os.PathLike) -> None:
    """Delete the files of an earlier run from `output_dir` (RUN_FILES only)."""
    for name in RUN_FILES:
        path = Path(output_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def check_inputs(cfg: Config) -> None:
    """InputError naming a data source, token cache, tokenizer or model directory of `cfg` that is not there, or
    what is wrong with its [model] section."""
    from gsa.models.loading import check_model_dir

    data = cfg.data
    if data.kind == "text":
        if data.tokens:
            if not (Path(data.tokens) / "meta.json").is_file():
                raise InputError(f"data.tokens = {data.tokens!r} is not a token cache directory (no meta.json)")
        else:
            try:
                expand_sources(data.sources)
            except FileNotFoundError as e:
                raise InputError(f"data.sources: {one_line(e)}") from None
        if data.tokenizer not in ("bpe", "byte") and not Path(data.tokenizer).is_dir():
            raise InputError(f"data.tokenizer = {data.tokenizer!r} is neither 'bpe', 'byte' nor a tokenizer directory")
    check_model_section(cfg.model)
    if cfg.model["type"] not in BUILT_TYPES:
        check_model_dir(model_source(cfg.model), accept=loaded_model_type(cfg.model["type"]).accept)
    if cfg.distill.teacher:
        distillation_factory()  # registered (by gsa.convert), else InputError naming the import
        check_model_dir(cfg.distill.teacher)
