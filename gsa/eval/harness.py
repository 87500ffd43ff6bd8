"""lm-evaluation-harness adapter: score a saved GSA model (or any causal LM directory) with ``lm_eval``.

``register()`` makes ``gsa`` a model name in lm-eval's registry: lm-eval's own Hugging Face wrapper (HFLM)
after ``import gsa.models`` has registered GSA with transformers' Auto classes, so log-likelihood, rolling
perplexity and generation tasks all work (generation uses left padding with an attention mask, which GSA
honours). ``gsa eval harness --model DIR --tasks NAME[,NAME] [--include-path TASK_DIR]`` runs tasks, including
local task files (a YAML whose ``dataset_path: json`` points at local JSON/JSONL), since the harness's own
tasks download their data.

From Python: ``import gsa.eval.harness as h; h.register(); lm_eval.simple_evaluate(model="gsa",
model_args={"pretrained": DIR}, tasks=[...])``. Needs ``pip install lm-eval`` (imported only here).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gsa.errors import InputError


def register() -> None:
    """Register the ``gsa`` model name with lm-eval (idempotent)."""
    try:
        from lm_eval.api.registry import MODEL_REGISTRY, register_model
        from lm_eval.models.huggingface import HFLM
    except ImportError as e:
        raise ImportError("the lm-eval adapter needs lm-evaluation-harness: pip install lm-eval") from e
    import gsa.models  # noqa: F401  (registers GSA with the transformers Auto classes)

    if "gsa" in MODEL_REGISTRY:
        return

    @register_model("gsa")
    class GSALM(HFLM):
        """HFLM for a local GSA model directory; CPU unless a GPU is present."""

        def __init__(self, pretrained: str, device: str | None = None, **kwargs: Any):
            import torch

            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            super().__init__(pretrained=pretrained, backend="causal", device=device, **kwargs)


def evaluate(model_dir: str | Path, tasks: list[str], include_path: str | Path | None = None,
             batch_size: int = 8, device: str | None = None, limit: int | None = None) -> dict[str, Any]:
    """Run lm-eval ``tasks`` on ``model_dir``; return ``{task: {metric: value}}``."""
    register()
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(include_path) if include_path else None)
    model_args = {"pretrained": str(model_dir), "batch_size": batch_size}
    if device:
        model_args["device"] = device
    out = lm_eval.simple_evaluate(model="gsa", model_args=model_args, tasks=tasks, task_manager=manager,
                                  limit=limit)
    return {task: {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            for task, metrics in out["results"].items()}


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, type=Path, help="model directory (save_pretrained layout)")
    p.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    p.add_argument("--include-path", type=Path, help="directory of local task YAML files")
    p.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    p.add_argument("--device", help="cpu, cuda ... (default: cuda if available)")
    p.add_argument("--limit", type=int, help="at most this many documents per task")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")


def _check_args(args) -> list[str]:
    """The task names, after an InputError for the first unusable argument (or a missing lm-eval)."""
    import importlib.util

    from gsa.models.loading import check_model_dir, resolve_device

    if importlib.util.find_spec("lm_eval") is None:
        raise InputError("gsa eval harness needs lm-evaluation-harness: pip install lm-eval")
    check_model_dir(args.model)
    resolve_device(args.device)
    tasks = [t for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise InputError(f"--tasks names no task, got {args.tasks!r}")
    for flag, value in (("--batch-size", args.batch_size), ("--limit", args.limit)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be >= 1, got {value}")
    if args.include_path is not None and not args.include_path.is_dir():
        raise InputError(f"--include-path {args.include_path} is not a directory")
    return tasks


def run(args) -> int:
    tasks = _check_args(args)
    results = evaluate(args.model, tasks, args.include_path, args.batch_size, args.device, args.limit)
    for task, metrics in results.items():
        print(task + ": " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0
