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
```

Overrides on the command line are ``section.key=value`` (``train.max_steps=50``, ``model.num_slots=32``,
``seed=1``); the value is parsed as TOML (``data.sources=["a.txt"]``) and, failing that, taken as a string.
"""

from __future__ import annotations

import dataclasses
try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gsa.data.mqar import MQAR_ALPHA, MQAR_VOCAB


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
    # share of the training windows replaced by synthetic passkey sequences (gsa.eval.passkey's format: a key in
    # filler text from the training split, asked for at the end), to train in-context recall; 0 = none
    passkey_fraction: float = 0.0
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
class DistillConfig:
    """Transformer-to-GSA finetuning against the teacher (T2R); off while `teacher` is empty.

    stage "attention": each student attention layer matches the teacher layer's attention output (hidden-state
    MSE), training only the attention parameters in `train_params`; stage "logits": KL to the teacher's logits
    (temperature), end to end. The teacher runs in the same process, frozen.
    """

    teacher: str = ""  # a local Hugging Face checkpoint directory of the Llama family
    stage: str = "logits"  # "attention" | "logits"
    temperature: float = 1.0
    train_params: list[str] = field(default_factory=lambda: ["f_proj"])  # stage "attention" only
    # with data.passkey_fraction: the weight of the passkey answer positions, added to the stage's loss: stage "logits"
    # the student's cross-entropy there, stage "attention" each layer's output MSE averaged over them alone
    answer_weight: float = 0.0


@dataclass
class Config:
    seed: int = 0
    output_dir: str = "runs/default"
    model: dict[str, Any] = field(default_factory=lambda: {"type": "gsa"})
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "optim": OptimConfig, "train": TrainConfig, "distill": DistillConfig}


def _check_type(where: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = True
    if not ok:
        raise TypeError(f"config key {where}: expected {type(default).__name__}, got {value!r}")
    return value


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build a Config; raises ``KeyError`` on an unknown section or key, ``TypeError`` on a wrong type."""
    cfg = Config()
    for key, value in raw.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise TypeError(f"config section [{key}] must be a table")
            section = getattr(cfg, key)
            names = {f.name for f in dataclasses.fields(section)}
            for k, v in value.items():
                if k not in names:
                    raise KeyError(f"unknown config key {key}.{k} (known: {', '.join(sorted(names))})")
                setattr(section, k, _check_type(f"{key}.{k}", v, getattr(section, k)))
        elif key == "model":
            if not isinstance(value, dict):
                raise TypeError("config section [model] must be a table")
            cfg.model = {"type": "gsa", **value}
        elif key in ("seed", "output_dir"):
            setattr(cfg, key, _check_type(key, value, getattr(cfg, key)))
        else:
            raise KeyError(f"unknown config key {key!r} (known: seed, output_dir, [model], [data], [optim], [train], "
                           "[distill])")
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    choices = {
        "data.kind": (cfg.data.kind, ("text", "mqar")),
        "train.device": (cfg.train.device, ("auto", "cpu", "cuda")),
        "train.precision": (cfg.train.precision, ("auto", "bf16", "fp32")),
        "train.parallel": (cfg.train.parallel, ("ddp", "fsdp")),
        "model.type": (cfg.model.get("type"), ("gsa", "llama", "zoology", "t2r", "pretrained")),
        "distill.stage": (cfg.distill.stage, ("attention", "logits")),
    }
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise ValueError(f"config key {name} must be one of {allowed}, got {value!r}")
    positive = {
        "train.max_steps": cfg.train.max_steps, "train.micro_batch_size": cfg.train.micro_batch_size,
        "train.grad_accum": cfg.train.grad_accum, "train.keep_checkpoints": cfg.train.keep_checkpoints,
        "train.log_every": cfg.train.log_every, "data.seq_len": cfg.data.seq_len, "optim.lr": cfg.optim.lr,
    }
    for name, value in positive.items():
        if value <= 0:
            raise ValueError(f"config key {name} must be positive, got {value}")
    if not 0 <= cfg.data.passkey_fraction < 1:
        raise ValueError(f"data.passkey_fraction must be in [0, 1), got {cfg.data.passkey_fraction}")
    if cfg.model.get("type") == "zoology" and cfg.data.kind == "text" and cfg.data.documents:
        raise ValueError("model.type = \"zoology\" runs full unpacked sequences: set data.documents = false (or MQAR)")
    if cfg.data.passkey_fraction and cfg.data.kind != "text":
        raise ValueError("data.passkey_fraction mixes passkey sequences into text data: needs data.kind = \"text\"")
    if not 0 <= cfg.optim.min_lr_ratio <= 1:
        raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {cfg.optim.min_lr_ratio}")
    if len(cfg.optim.betas) != 2:
        raise ValueError(f"optim.betas must have two entries, got {cfg.optim.betas}")
    if cfg.distill.teacher:
        if cfg.data.kind != "text" or cfg.data.documents:
            raise ValueError("distillation reads plain text windows: set data.kind = \"text\" and data.documents = "
                             "false (the teacher has no packed-sequence path here)")
        if not cfg.distill.temperature > 0:
            raise ValueError(f"distill.temperature must be positive, got {cfg.distill.temperature}")
    if cfg.distill.answer_weight:
        if cfg.distill.answer_weight < 0:
            raise ValueError(f"distill.answer_weight must be >= 0, got {cfg.distill.answer_weight}")
        if not (cfg.distill.teacher and cfg.data.passkey_fraction):
            raise ValueError("distill.answer_weight weighs the passkey answers in a distillation loss: it needs "
                             "distill.teacher and data.passkey_fraction > 0")


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ValueError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a TOML file (or start from defaults when ``path`` is None) and apply ``key=value`` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise KeyError(f"override {text!r}: {k} is not a section")
        node[keys[-1]] = value
    return config_from_dict(raw)
