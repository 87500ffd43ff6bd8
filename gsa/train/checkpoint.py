"""Atomic, verified, resumable checkpoints.

``<output_dir>/checkpoints/step_00000100/``:

- ``model/``: ``save_pretrained`` layout (config.json, model.safetensors) plus the tokenizer, so
  ``gsa eval ppl --model .../model`` and ``from_pretrained`` work on any checkpoint;
- ``trainer.pt``: optimizer (full, unsharded state dict keyed by parameter names), scheduler, step;
- ``rng_rank{r}.pt``: each process's RNG states;
- ``lora.safetensors`` (runs with ``[lora]``): the adapters and the frozen weights under them; ``model/`` then
  holds the merged model (gsa.train.lora);
- ``manifest.json``: written last; size and SHA-256 of every other file.

A checkpoint is written into ``checkpoints/.tmp-step_...`` and renamed into place only when complete, its files and
folders flushed to disk (fsync) before the manifest and the rename, so a kill or a power loss at any moment leaves
either the whole new checkpoint or none of it. On resume, each candidate (newest
first) is verified against its manifest; one that fails is refused with the reason and the previous one is
tried.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from gsa.errors import InputError
from gsa.models.loading import file_sha256

_STEP_RE = re.compile(r"^step_(\d{8})$")


class CheckpointError(InputError):
    """A checkpoint that cannot be resumed from; the message says why."""


def checkpoint_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_dir(output_dir: str | os.PathLike, step: int) -> Path:
    return checkpoint_root(output_dir) / f".tmp-step_{step:08d}"


def write_manifest(tmp: Path, step: int, world_size: int) -> None:
    """Flush every file and folder of `tmp` to disk, then record them in its manifest (itself flushed)."""
    files = {}
    for p in sorted(tmp.rglob("*")):
        _fsync(p)
        if p.is_file():
            files[str(p.relative_to(tmp))] = {"size": p.stat().st_size, "sha256": file_sha256(p)}
    _fsync(tmp)  # the files and their entries reach the disk before the manifest that vouches for them
    manifest = {"step": step, "world_size": world_size, "files": files}
    with open(tmp / "manifest.json", "w") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    _fsync(tmp)  # and the manifest's entry before the rename that publishes the checkpoint


def publish(tmp: Path, step: int, keep: int) -> Path:
    """Rename a complete temp checkpoint into place and delete all but the newest ``keep``."""
    final = tmp.parent / f"step_{step:08d}"
    if final.exists():  # a newer one that resume refused (corrupt or partial), now written again
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(final.parent)  # the rename itself
    for old in list_checkpoints(tmp.parent.parent)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Published checkpoint directories, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_RE.match(p.name)]
    return sorted(found, key=lambda p: p.name)


def clean_temporaries(output_dir: str | os.PathLike) -> None:
    root = checkpoint_root(output_dir)
    if root.is_dir():
        for p in root.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)


def verify(path: Path, world_size: int) -> int:
    """Check a checkpoint against its manifest; return its step or raise CheckpointError saying why not."""
    mf = path / "manifest.json"
    if not mf.is_file():
        raise CheckpointError(f"{path}: no manifest.json (incomplete checkpoint)")
    try:
        manifest = json.loads(mf.read_text())
        files, step = manifest["files"], int(manifest["step"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: unreadable manifest.json ({e})") from e
    for rel, info in files.items():
        p = path / rel
        if not p.is_file():
            raise CheckpointError(f"{path}: missing file {rel}")
        if p.stat().st_size != info["size"]:
            raise CheckpointError(f"{path}: {rel} has {p.stat().st_size} bytes, the manifest says {info['size']}")
        if file_sha256(p) != info["sha256"]:
            raise CheckpointError(f"{path}: {rel} is corrupted (SHA-256 differs from the manifest)")
    if manifest.get("world_size") != world_size:
        raise CheckpointError(
            f"{path}: written by {manifest.get('world_size')} processes, resuming with {world_size} "
            "(the RNG states are per process)"
        )
    return step


def latest_valid(output_dir: str | os.PathLike, world_size: int, log=print) -> tuple[Path, int] | None:
    """The newest checkpoint that verifies; refused ones are reported through ``log``. None if there are no
    checkpoints at all; CheckpointError if there are some but none verifies."""
    candidates = list_checkpoints(output_dir)
    reasons = []
    for path in reversed(candidates):
        try:
            return path, verify(path, world_size)
        except CheckpointError as e:
            reasons.append(str(e))
            log(f"refusing checkpoint: {e}; trying the previous one")
    if candidates:
        raise CheckpointError("no usable checkpoint to resume from: " + "; ".join(reasons))
    return None


def check_same_model(path: Path, model, state_dict: dict) -> None:
    """CheckpointError unless checkpoint `path` (its weights `state_dict`) was trained with `model` (a plain,
    unwrapped PreTrainedModel): the same config fields, and every tensor there with its shape (set_model_state_dict
    with strict=False checks neither). Resuming with another model would train something else under the old run's
    name."""
    saved_path = path / "model" / "config.json"
    if saved_path.is_file():
        saved, now = json.loads(saved_path.read_text()), json.loads(model.config.to_json_string())
        bookkeeping = {"_name_or_path", "transformers_version", "dtype", "torch_dtype", "architectures"}
        changed = sorted(k for k in (saved.keys() | now.keys()) - bookkeeping if saved.get(k) != now.get(k))
        if changed:
            raise CheckpointError(
                f"{path} was trained with another model ("
                + ", ".join(f"{k} {saved.get(k)!r} then, {now.get(k)!r} now" for k in changed)
                + "): resume with the [model] settings it was trained with, or train into another output_dir")
    # save_pretrained drops tied duplicates (lm_head = embedding); FSDP2's DTensors report their full shapes
    want = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {n for n, _ in model.named_parameters()}
    missing = sorted(set(want) - set(state_dict) - tied)
    unexpected = sorted(set(state_dict) - set(want))
    reshaped = sorted(n for n in set(state_dict) & set(want) if tuple(state_dict[n].shape) != want[n])
    if missing or unexpected or reshaped:
        raise CheckpointError(f"{path}: weights do not match the model (missing {missing}, unexpected {unexpected}, "
                              f"another shape {reshaped})")
