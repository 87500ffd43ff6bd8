"""The trainer: TOML config, a plain AdamW loop (warmup + cosine, clipping, accumulation, bf16 on GPU),
DDP / FSDP2 under torchrun, atomic verified checkpoints with exact resume, metrics.jsonl."""

from gsa.lazy import lazy_exports

__all__ = ["Config", "DataConfig", "OptimConfig", "TrainConfig", "Trainer", "config_from_dict", "load_config",
           "main", "train"]

lazy_exports(__name__, {
    **dict.fromkeys(["Config", "DataConfig", "OptimConfig", "TrainConfig", "config_from_dict", "load_config"],
                    ".config"),
    "main": ".cli", "Trainer": ".loop", "train": ".loop",
})
