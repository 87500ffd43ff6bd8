"""The training config: a TOML file read into dataclasses; unknown keys raise.

```toml
seed = 0
output_dir = "runs/tiny-cpu"

[model]            # type selects the class; every other key goes to its config (GSAConfig / LlamaConfig)
type = "gsa"       # "gsa" | "llama" (the softmax-attention Transformer baseline) | "zoology" (MQAR harness)
hidden_size = 64

[data]             # see DataConfig
[optim]            # see OptimConfig
[train]            # see TrainConfig
[distill]          # see DistillConfig (gsa.train.config_distill): finetuning against a Transformer teacher
[lora]             # see LoraConfig (gsa.train.config_distill): low-rank adapters instead of full finetuning
```

Every key is checked for its type and range when the config is read (InputError naming it). Overrides on the
command line are ``section.key=value`` (``train.max_steps=50``, ``model.num_slots=32``, ``seed=1``); the value is
parsed as TOML (``data.sources=["a.txt"]``) and, failing that, taken as a string.
"""

from __future__ import annotations

import dataclasses
import math

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gsa.data.mqar import MQAR_ALPHA, MQAR_VOCAB
from gsa.data.passkey import WORDINGS as PASSKEY_WORDINGS
from gsa.errors import InputError

from .config_distill import DistillConfig, LoraConfig, check_distill, check_lora


@dataclass
class DataConfig:
    kind: str = "text"  # "text" (language modelling) | "mqar" (associative recall)
    # text
    sources: list[str] = field(default_factory=lambda: ["python-docs"])  # files, directories, globs
    text_field: str = "text"  # the .jsonl / .parquet field holding the text
    tokenizer: str = "bpe"  # "bpe" (trained on the training split) | "byte" | a local HF tokenizer path
    vocab_size: int = 8192  # of the "bpe" tokenizer
    cache_dir: str = ".cache/gsa-data"
    tokens: str = ""  # a token cache directory built earlier (tokens-<key>): used instead of sources
    heldout_fraction: float = 0.02
    documents: bool = True  # pack with cu_seqlens at document boundaries (else plain windows)
    seq_len: int = 512
    # share of the training windows replaced by synthetic passkey sequences (gsa.data.passkey's format: a key in
    # filler text from the training split, asked for at the end), to train in-context recall; 0 = none
    passkey_fraction: float = 0.0
    # their wording (gsa.data.passkey.WORDINGS): "passkey" (the evaluation's default), or "mixed" (a wording drawn
    # per example from pools that leave the "code" wording out, so a probe in "code" asks in words never trained on)
    passkey_wording: str = "passkey"
    # 0: each passkey sequence fills its window, its question at the end; > 0: each is L tokens, L uniform in
    # [passkey_min_length, seq_len], followed by EOS and plain text, so questions come at every position a probe of
    # L tokens asks them (trained on whole windows only, a student missed at 256 tokens: BENCHMARKS.md, T2R)
    passkey_min_length: int = 0
    # mqar (Zoology): keys/values from a vocabulary of mqar_vocab_size, seq_len tokens per example
    mqar_vocab_size: int = MQAR_VOCAB
    mqar_train_pairs: list[int] = field(default_factory=lambda: [4, 8, 16, 32, 64])
    # training length per entry of mqar_train_pairs (Zoology's mix: short sequences with few pairs teach the
    # recall mechanism fast); empty: seq_len for all. Evaluation lengths: mqar_eval_seq_lens.
    mqar_train_seq_lens: list[int] = field(default_factory=list)
    mqar_eval_pairs: list[int] = field(default_factory=lambda: [4, 8, 16, 32, 64])
    # test length per entry of mqar_eval_pairs (empty: seq_len for all); a set at another length is reported as
    # "pairs@length" (e.g. 64 pairs at the training length: mqar_eval_pairs = [64, 64], mqar_eval_seq_lens = [256, 512])
    mqar_eval_seq_lens: list[int] = field(default_factory=list)
    mqar_eval_examples: int = 256  # per pair count
    mqar_alpha: float = MQAR_ALPHA
    # the example format (gsa.data.mqar_batch): Zoology's own generator is query_values = false, random_fill = true
    mqar_query_values: bool = True  # the value follows each query key in the input too
    mqar_random_fill: bool = False  # filler positions hold uniform random tokens instead of 0


@dataclass
class OptimConfig:
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at max_steps
    warmup_steps: int = 100
    weight_decay: float = 0.1  # on matrices only; norms and biases are not decayed
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 disables


@dataclass
class TrainConfig:
    max_steps: int = 1000
    micro_batch_size: int = 8  # sequences per process per micro-step
    grad_accum: int = 1  # micro-steps per optimizer step
    device: str = "auto"  # "auto" (cuda if available) | "cpu" | "cuda"
    precision: str = "auto"  # "auto" (bf16 autocast on GPU, float32 on CPU) | "bf16" | "fp32"
    parallel: str = "ddp"  # with several processes: "ddp" | "fsdp" (FSDP2 fully_shard per block + root)
    activation_checkpointing: bool = False
    compile: bool = False  # torch.compile each block
    sparse_logits: bool = False  # LM head and loss at labelled positions only (MQAR: 1 position in 8); one process
    time_limit_s: float = 0.0  # > 0: stop after this many seconds of training (evaluate, checkpoint, save the
    # model as at max_steps; the schedule is not shortened)
    log_every: int = 10
    eval_every: int = 200  # 0: only at the end
    eval_sequences: int = 64  # the first this many held-out windows (the same set for any process count)
    checkpoint_every: int = 200  # 0: only at the end
    keep_checkpoints: int = 2
    tensorboard: bool = False
    wandb_project: str = ""  # non-empty: log to Weights & Biases
    progress: bool = True  # tqdm bar on rank 0


@dataclass
class Config:
    seed: int = 0
    output_dir: str = "runs/default"
    model: dict[str, Any] = field(default_factory=lambda: {"type": "gsa"})
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "optim": OptimConfig, "train": TrainConfig, "distill": DistillConfig,
             "lora": LoraConfig}
# element types of the list-valued keys
_ITEMS = {"sources": str, "mqar_train_pairs": int, "mqar_train_seq_lens": int, "mqar_eval_pairs": int,
          "mqar_eval_seq_lens": int, "betas": float, "train_params": str, "targets": str, "train_full": str}


def _fits(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def _check_type(where: str, value: Any, default: Any) -> Any:
    """`value` for the key `where` whose default is `default` (ints taken as floats where floats are due)."""
    if isinstance(default, list):
        item = _ITEMS[where.rsplit(".", 1)[-1]]()
        if not (isinstance(value, list) and all(_fits(v, item) for v in value)):
            raise InputError(f"config key {where}: expected a list of {type(item).__name__}, got {value!r}")
        return [float(v) for v in value] if isinstance(item, float) else value
    if not _fits(value, default):
        kind = "a finite number" if isinstance(default, float) else type(default).__name__
        raise InputError(f"config key {where}: expected {kind}, got {value!r}")
    return float(value) if isinstance(default, float) else value


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build a Config; InputError (a ValueError) naming the key on an unknown section or key, a wrong type or a
    value out of range."""
    cfg = Config()
    for key, value in raw.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise InputError(f"config section [{key}] must be a table, got {value!r}")
            section = getattr(cfg, key)
            names = {f.name for f in dataclasses.fields(section)}
            for k, v in value.items():
                if k not in names:
                    raise InputError(f"unknown config key {key}.{k} (known: {', '.join(sorted(names))})")
                setattr(section, k, _check_type(f"{key}.{k}", v, getattr(section, k)))
        elif key == "model":
            if not isinstance(value, dict):
                raise InputError(f"config section [model] must be a table, got {value!r}")
            cfg.model = {"type": "gsa", **value}
        elif key in ("seed", "output_dir"):
            setattr(cfg, key, _check_type(key, value, getattr(cfg, key)))
        else:
            raise InputError(f"unknown config key {key!r} (known: seed, output_dir, [model], [data], [optim], "
                             "[train], [distill], [lora])")
    validate(cfg)
    return cfg


def _check_ranges(cfg: Config) -> None:
    d, o, t = cfg.data, cfg.optim, cfg.train
    at_least = {  # key: (value, smallest allowed)
        "seed": (cfg.seed, 0), "train.max_steps": (t.max_steps, 1), "train.micro_batch_size": (t.micro_batch_size, 1),
        "train.grad_accum": (t.grad_accum, 1), "train.keep_checkpoints": (t.keep_checkpoints, 1),
        "train.log_every": (t.log_every, 1), "train.eval_every": (t.eval_every, 0),
        "train.eval_sequences": (t.eval_sequences, 1), "train.checkpoint_every": (t.checkpoint_every, 0),
        "train.time_limit_s": (t.time_limit_s, 0), "data.seq_len": (d.seq_len, 2), "data.vocab_size": (d.vocab_size, 1),
        "data.mqar_vocab_size": (d.mqar_vocab_size, 1), "data.mqar_eval_examples": (d.mqar_eval_examples, 1),
        "optim.warmup_steps": (o.warmup_steps, 0), "optim.weight_decay": (o.weight_decay, 0),
        "optim.grad_clip": (o.grad_clip, 0), "data.passkey_min_length": (d.passkey_min_length, 0),
    }
    for name, (value, low) in at_least.items():
        if value < low:
            raise InputError(f"config key {name} must be >= {low}, got {value}")
    for name, value in (("optim.lr", o.lr), ("optim.eps", o.eps), ("distill.temperature", cfg.distill.temperature)):
        if not value > 0:
            raise InputError(f"config key {name} must be positive, got {value}")
    for name in ("mqar_train_pairs", "mqar_train_seq_lens", "mqar_eval_pairs", "mqar_eval_seq_lens"):
        if any(v < 1 for v in getattr(d, name)):
            raise InputError(f"config key data.{name} must hold positive ints, got {getattr(d, name)}")
    for name, value in (("output_dir", cfg.output_dir), ("data.tokenizer", d.tokenizer),
                        ("data.text_field", d.text_field)):
        if not value.strip():
            raise InputError(f"config key {name} must not be empty")


def validate(cfg: Config) -> None:
    choices = {
        "data.kind": (cfg.data.kind, ("text", "mqar")),
        "train.device": (cfg.train.device, ("auto", "cpu", "cuda")),
        "train.precision": (cfg.train.precision, ("auto", "bf16", "fp32")),
        "train.parallel": (cfg.train.parallel, ("ddp", "fsdp")),
        "model.type": (cfg.model.get("type"), ("gsa", "llama", "zoology", "t2r", "pretrained")),
        "distill.stage": (cfg.distill.stage, ("feature_map", "attention", "logits")),
        "distill.gate_init": (cfg.distill.gate_init, ("", "teacher_span")),
        "distill.layer_loss": (cfg.distill.layer_loss, ("mse", "relative")),
        "distill.layer_target": (cfg.distill.layer_target, ("attention", "block")),
        "data.passkey_wording": (cfg.data.passkey_wording, PASSKEY_WORDINGS),
    }
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise InputError(f"config key {name} must be one of {allowed}, got {value!r}")
    _check_ranges(cfg)
    if not 0 <= cfg.data.heldout_fraction < 1:
        raise InputError(f"config key data.heldout_fraction must be in [0, 1), got {cfg.data.heldout_fraction}")
    if not 0 <= cfg.data.passkey_fraction < 1:
        raise InputError(f"config key data.passkey_fraction must be in [0, 1), got {cfg.data.passkey_fraction}")
    if cfg.data.kind == "text" and not (cfg.data.tokens or cfg.data.sources):
        raise InputError("config key data.sources must name at least one source (or set data.tokens)")
    if cfg.model.get("type") == "zoology" and cfg.data.kind == "text" and cfg.data.documents:
        raise InputError("model.type = \"zoology\" runs full unpacked sequences: set data.documents = false (or MQAR)")
    if cfg.data.passkey_min_length and not cfg.data.passkey_fraction:
        raise InputError("data.passkey_min_length sets the passkey sequences' lengths: it needs data.passkey_fraction "
                         "> 0")
    if cfg.data.passkey_min_length > cfg.data.seq_len:
        raise InputError(f"config key data.passkey_min_length must be <= data.seq_len ({cfg.data.seq_len}), got "
                         f"{cfg.data.passkey_min_length}")
    if cfg.data.passkey_fraction and cfg.data.kind != "text":
        raise InputError("data.passkey_fraction mixes passkey sequences into text data: needs data.kind = \"text\"")
    if not 0 <= cfg.optim.min_lr_ratio <= 1:
        raise InputError(f"config key optim.min_lr_ratio must be in [0, 1], got {cfg.optim.min_lr_ratio}")
    if len(cfg.optim.betas) != 2 or not all(0 <= b < 1 for b in cfg.optim.betas):
        raise InputError(f"config key optim.betas must be two numbers in [0, 1), got {cfg.optim.betas}")
    check_distill(cfg)
    check_lora(cfg)


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise InputError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a TOML file (or start from defaults when ``path`` is None) and apply ``key=value`` overrides; InputError
    naming the file, key or override that is wrong."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise InputError(f"config file {path} not found") from None
        except IsADirectoryError:
            raise InputError(f"config file {path} is a directory (pass a .toml file)") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"config file {path} is not valid TOML: {e}") from None
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise InputError(f"override {text!r}: {k} is not a section")
        node[keys[-1]] = value
    return config_from_dict(raw)

