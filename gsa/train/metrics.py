"""Metrics sinks: ``metrics.jsonl`` always; TensorBoard and Weights & Biases when asked (imported lazily)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class Metrics:
    """Rank 0 only. ``resume_step``: keep the rows up to that step and drop later ones (written by the run
    that was interrupted after its last checkpoint), so the file reads as one uninterrupted run."""

    def __init__(self, output_dir: Path, resume_step: int | None, tensorboard: bool, wandb_project: str,
                 config: dict[str, Any]):
        self.path = Path(output_dir) / "metrics.jsonl"
        kept: list[str] = []
        if resume_step is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= resume_step:
                        kept.append(line)
                except (ValueError, KeyError):
                    continue  # a line cut short by the kill
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # a new file renamed over the old one: a kill while it is written leaves the old rows, never half of them
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w") as f:
            f.write("".join(line + "\n" for line in kept))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._file = open(self.path, "a")
        self._tb = self._wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ImportError("train.tensorboard = true needs the tensorboard package") from e
            self._tb = SummaryWriter(str(Path(output_dir) / "tensorboard"))
        if wandb_project:
            try:
                import wandb
            except ImportError as e:
                raise ImportError("train.wandb_project needs the wandb package") from e
            self._wandb = wandb.init(project=wandb_project, config=config, dir=str(output_dir))

    def log(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        scalars = {k: v for k, v in _flatten(row).items() if k != "step"}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, row["step"])
        if self._wandb is not None:
            self._wandb.log(scalars, step=row["step"])

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _flatten(row: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in row.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)):
            out[f"{prefix}{k}"] = v
    return out


def read_metrics(output_dir: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines() if line]
