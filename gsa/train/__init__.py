"""The trainer: TOML config, a plain AdamW loop (warmup + cosine, clipping, accumulation, bf16 on GPU),
DDP / FSDP2 under torchrun, atomic verified checkpoints with exact resume, metrics.jsonl."""

from .cli import main
from .config import Config, DataConfig, OptimConfig, TrainConfig, config_from_dict, load_config
from .loop import Trainer, train

__all__ = ["Config", "DataConfig", "OptimConfig", "TrainConfig", "Trainer", "config_from_dict", "load_config",
           "main", "train"]
