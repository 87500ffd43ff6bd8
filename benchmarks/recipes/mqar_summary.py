"""Tabulate MQAR runs: the accuracy at every pair count at each run's last evaluation, the mean (min-max) over the
seeds of each job, and the 64-pair accuracy at every evaluation. Writes JSON and a PNG beside it; prints the table.

    python benchmarks/recipes/mqar_summary.py --out mqar-d64.json runs/mqar/d64-gsa-seed0 runs/mqar/d64-gsa-seed1
    python benchmarks/recipes/mqar_summary.py --out x.json "gsa-seed0=old/gsa.metrics.jsonl" ...

A run is a trainer output folder (its metrics.jsonl) or NAME=PATH with PATH a folder or a metrics.jsonl file. Runs
whose names differ only in a trailing "-seedN" are seeds of one job.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gsa.bench.common import machine, pick_device, plot_panels, write_json  # noqa: E402

SEED = re.compile(r"-seed\d+$")


def read_run(spec: str) -> dict:
    """{"name", "steps", "acc": {pairs: accuracy} at the last evaluation, "curve": [[step, {pairs: accuracy}], ...]}."""
    name, _, path = spec.partition("=") if "=" in spec else (Path(spec).name, "", spec)
    path = Path(path)
    rows = [json.loads(line) for line in (path / "metrics.jsonl" if path.is_dir() else path).read_text().splitlines()
            if line.strip()]
    evals = [(r["step"], r["mqar_acc"]) for r in rows if "mqar_acc" in r]
    if not evals:
        raise SystemExit(f"{spec}: no MQAR evaluation in its metrics")
    return {"name": name, "steps": evals[-1][0], "acc": evals[-1][1], "curve": [list(e) for e in evals]}


def group(runs: list[dict]) -> dict[str, dict]:
    """Job name -> {"seeds": n, "mean": {pairs: ...}, "min": ..., "max": ...} over its runs."""
    jobs: dict[str, list[dict]] = {}
    for run in runs:
        jobs.setdefault(SEED.sub("", run["name"]), []).append(run)
    out = {}
    for job, members in jobs.items():
        pairs = list(members[0]["acc"])
        accs = {p: [m["acc"][p] for m in members if p in m["acc"]] for p in pairs}
        out[job] = {"seeds": len(members), "mean": {p: statistics.fmean(a) for p, a in accs.items()},
                    "min": {p: min(a) for p, a in accs.items()}, "max": {p: max(a) for p, a in accs.items()}}
    return out


def table(runs: list[dict], jobs: dict[str, dict]) -> str:
    pairs = list(runs[0]["acc"])
    lines = ["| run | steps | " + " | ".join(pairs) + " |", "| --- | --- |" + " --- |" * len(pairs)]
    for run in runs:
        lines.append(f"| {run['name']} | {run['steps']} | " + " | ".join(f"{run['acc'][p]:.3f}" for p in pairs) + " |")
    for job, g in jobs.items():
        if g["seeds"] > 1:
            cells = [f"{g['mean'][p]:.3f} ({g['min'][p]:.3f}-{g['max'][p]:.3f})" for p in pairs]
            lines.append(f"| {job}, mean of {g['seeds']} (min-max) | | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders, or NAME=PATH (a folder or a metrics.jsonl file)")
    p.add_argument("--out", type=Path, required=True, help="JSON path (the PNG goes beside it)")
    p.add_argument("--pairs", default="64", help="the pair count whose curve the plot shows (default 64)")
    p.add_argument("--machine", default=None,
                   help="where the runs ran, as text (default: this machine's description)")
    args = p.parse_args(argv)
    runs = [read_run(r) for r in args.runs]
    jobs = group(runs)
    print(table(runs, jobs))
    where = {"recorded": args.machine} if args.machine else machine(pick_device(None))
    write_json(args.out, {"machine": where, "jobs": jobs, "runs": runs})
    series = {r["name"]: ([s for s, _ in r["curve"]], [a[args.pairs] for _, a in r["curve"]]) for r in runs}
    plot_panels(args.out.with_suffix(".png"), f"MQAR, {args.pairs} pairs",
                [{"xlabel": "step", "ylabel": f"accuracy at {args.pairs} pairs", "series": series, "ymin": 0.0}])
    return 0


if __name__ == "__main__":
    sys.exit(main())
