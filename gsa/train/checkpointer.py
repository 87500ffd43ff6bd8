"""The trainer's checkpoints: save (model directory, optimizer, scheduler, RNG states; atomic, verified) and load
for an exact resume. The on-disk layout and its checks live in gsa.train.checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from gsa.data.mqar import write_mqar_settings

from . import checkpoint as ckpt
from .config import DataConfig
from .distributed import Dist
from .lora import join_lora_state, split_lora_state
from .model import unwrap


LORA_FILE = "lora.safetensors"


class Checkpointer:
    """out: the run's output directory; keep: how many checkpoints to keep; tokenizer (or None) and data: saved
    beside each checkpoint's model so that it loads and evaluates on its own. lora_scaling (alpha / rank, or None
    without LoRA): a LoRA model's checkpoint holds the merged model in model/ and its adapters, with the frozen
    weights under them, in lora.safetensors (gsa.train.lora)."""

    def __init__(self, out: Path, d: Dist, keep: int, tokenizer, data: DataConfig, lora_scaling: float | None = None):
        self.out, self.d, self.keep, self.tokenizer, self.data = out, d, keep, tokenizer, data
        self.lora_scaling = lora_scaling

    def save(self, model: torch.nn.Module, optimizer, scheduler, step: int) -> Path | None:
        """Write the checkpoint of `step`; returns its directory (main process) or None."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        d = self.d
        msd, osd = get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        tmp = ckpt.tmp_dir(self.out, step)
        if d.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        d.barrier()
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, tmp / f"rng_rank{d.rank}.pt")
        d.barrier()
        final = None
        if d.is_main:
            if self.lora_scaling is not None:
                from safetensors.torch import save_file

                msd, adapters = split_lora_state(msd, self.lora_scaling)
                save_file({k: v.contiguous() for k, v in adapters.items()}, tmp / LORA_FILE,
                          metadata={"scaling": repr(self.lora_scaling)})
            self._save_model(model, tmp / "model", msd)
            torch.save({"step": step, "optimizer": osd, "scheduler": scheduler.state_dict()}, tmp / "trainer.pt")
            ckpt.write_manifest(tmp, step, d.world)
            final = ckpt.publish(tmp, step, self.keep)
        d.barrier()
        return final

    def _save_model(self, model: torch.nn.Module, path: Path, state_dict: dict[str, torch.Tensor]) -> None:
        from transformers.utils import logging as hf_logging

        enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # its per-shard bar would break into ours
        try:
            unwrap(model).save_pretrained(path, state_dict=state_dict)
        finally:
            if enabled:
                hf_logging.enable_progress_bar()
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(path)
        data = self.data
        if data.kind == "mqar":  # so that `gsa eval mqar` tests the model in the format it learned
            write_mqar_settings(path, data.mqar_vocab_size, data.mqar_alpha, data.mqar_query_values,
                                data.mqar_random_fill)

    def load(self, path: Path, model: torch.nn.Module, optimizer, scheduler) -> int:
        """Restore model, optimizer, scheduler and this process's RNG states from checkpoint `path`; returns its
        step."""
        from safetensors.torch import load_file
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        sd: dict[str, torch.Tensor] = {}
        for f in sorted((path / "model").glob("*.safetensors")):
            sd.update(load_file(f))
        if (path / LORA_FILE).is_file() != (self.lora_scaling is not None):
            raise ckpt.CheckpointError(f"{path} was trained {'with' if (path / LORA_FILE).is_file() else 'without'} "
                                       "[lora] adapters: resume with the lora.rank it was trained with")
        if self.lora_scaling is not None:
            self._check_lora_scaling(path)
            sd = join_lora_state(sd, load_file(path / LORA_FILE))
        ckpt.check_same_model(path, unwrap(model), sd)
        set_model_state_dict(model, sd, options=StateDictOptions(full_state_dict=True, strict=False))
        state = torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
        set_optimizer_state_dict(model, optimizer, state["optimizer"], options=StateDictOptions(full_state_dict=True))
        scheduler.load_state_dict(state["scheduler"])
        rng = torch.load(path / f"rng_rank{self.d.rank}.pt", weights_only=True)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        return state["step"]

    def _check_lora_scaling(self, path: Path) -> None:
        """CheckpointError unless `path`'s adapters were trained with this run's alpha / rank: the file holds B and A
        only, and under another scaling the adapted layers would compute another model (every shape still fits)."""
        from safetensors import safe_open

        with safe_open(path / LORA_FILE, "pt") as f:
            saved = (f.metadata() or {}).get("scaling")
        if saved is not None and float(saved) != self.lora_scaling:
            raise ckpt.CheckpointError(f"{path} was trained with lora.alpha / lora.rank = {float(saved)}, this run has "
                                       f"{self.lora_scaling}: resume with the lora.alpha it was trained with")

    def publish(self, last: Path | None) -> Path:
        """Copy the last checkpoint's model directory to out/model (the trained model); returns that path."""
        final = self.out / "model"
        if self.d.is_main and last is not None:
            tmp = self.out / ".tmp-model"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(last / "model", tmp)
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
        self.d.barrier()
        return final
