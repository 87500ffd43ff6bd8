"""Compare training runs' metrics.jsonl: the logged loss at a few steps, each run's largest |loss difference| from the
first run (the reference), its last held-out loss and perplexity, its step count and median tokens/s. Prints a
markdown table; with --out also writes the rows as JSON.

    python benchmarks/recipes/compare_runs.py runs/dist/one runs/dist/one-seed1 runs/dist/ddp runs/dist/fsdp
    python benchmarks/recipes/compare_runs.py --out lm.json gsa=runs/lm/gsa llama=runs/lm/llama

A run is a trainer output folder, or NAME=PATH with PATH a folder or a metrics.jsonl file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gsa.bench.common import machine, pick_device, write_json  # noqa: E402


def summarize(spec: str) -> dict:
    name, _, path = spec.partition("=") if "=" in spec else (spec, "", spec)
    path = Path(path)
    rows = [json.loads(line) for line in (path / "metrics.jsonl" if path.is_dir() else path).read_text().splitlines()
            if line.strip()]
    loss = {r["step"]: r["loss"] for r in rows if "loss" in r and "lr" in r}
    evals = [r for r in rows if "eval_loss" in r]
    speed = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r]
    return {"name": name, "loss": loss, "steps": max(loss, default=0),
            "eval_loss": evals[-1]["eval_loss"] if evals else None,
            "eval_ppl": evals[-1].get("eval_ppl") if evals else None,
            "tokens_per_s": statistics.median(speed) if speed else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders, or NAME=PATH (a folder or a metrics.jsonl file)")
    p.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    p.add_argument("--machine", default=None,
                   help="where the runs ran, as text, for the JSON (default: this machine's description)")
    args = p.parse_args(argv)
    data = [summarize(r) for r in args.runs]
    ref = data[0]["loss"]
    steps = sorted(ref)
    shown = steps[:: max(1, len(steps) // 6)]  # about six columns, and always the last step
    if shown and shown[-1] != steps[-1]:
        shown.append(steps[-1])
    print("| run | " + " | ".join(f"loss @{s}" for s in shown)
          + " | max abs diff vs first | steps | eval loss | eval ppl | tokens/s |")
    print("| --- |" + " --- |" * (len(shown) + 5))
    for d in data:
        d["max_abs_diff"] = max((abs(d["loss"][s] - ref[s]) for s in steps if s in d["loss"]), default=None)
        cells = [f"{d['loss'][s]:.4f}" if s in d["loss"] else "-" for s in shown]
        fmt = [("max_abs_diff", ".4f"), ("steps", "d"), ("eval_loss", ".4f"), ("eval_ppl", ".2f"),
               ("tokens_per_s", ",.0f")]
        more = ["-" if d[k] is None else format(d[k], f) for k, f in fmt]
        print(f"| {d['name']} | " + " | ".join(cells + more) + " |")
    if args.out:
        where = {"recorded": args.machine} if args.machine else machine(pick_device(None))
        write_json(args.out, {"machine": where, "rows": [{k: v for k, v in d.items() if k != "loss"} for d in data]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
