"""Print a markdown table comparing training runs' metrics.jsonl: the logged loss at a few steps, the final held-out
loss and the median tokens/s, plus each run's largest |loss difference| from the first run (the reference).

    python benchmarks/scripts/compare_runs.py runs/dist/one runs/dist/one-seed1 runs/dist/ddp runs/dist/fsdp
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from gsa.train.metrics import read_metrics


def summarize(run: Path) -> tuple[dict[int, float], float | None, float]:
    rows = read_metrics(run)
    loss = {r["step"]: r["loss"] for r in rows if "loss" in r and "lr" in r}
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    speed = statistics.median(r["tokens_per_s"] for r in rows if "tokens_per_s" in r)
    return loss, (evals[-1] if evals else None), speed


def main(runs: list[str]) -> None:
    data = {r: summarize(Path(r)) for r in runs}
    ref = data[runs[0]][0]
    steps = sorted(ref)
    shown = steps[:: max(1, len(steps) // 6)]  # about six columns, and always the last step
    if shown[-1] != steps[-1]:
        shown.append(steps[-1])
    print("| run | " + " | ".join(f"loss @{s}" for s in shown) + " | max abs diff vs first | eval loss | tokens/s |")
    print("| --- |" + " --- |" * (len(shown) + 3))
    for r in runs:
        loss, ev, speed = data[r]
        diff = max((abs(loss[s] - ref[s]) for s in steps if s in loss), default=float("nan"))
        cells = [f"{loss[s]:.4f}" if s in loss else "-" for s in shown]
        evs = "-" if ev is None else f"{ev:.4f}"
        print(f"| {r} | " + " | ".join(cells) + f" | {diff:.4f} | {evs} | {speed:,.0f} |")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1:])
