"""The kernel grid's report: ratios per row, the results page's table, the plot and the files of a run
(`gsa bench grid` writes them; `gsa bench grid --report JSON` re-renders them)."""

from __future__ import annotations

from pathlib import Path


def ratios(row: dict) -> dict:
    """their time / ours for fla and SDPA, forward and forward+backward (None where not timed)."""
    out = {}
    for other in ("fla", "sdpa"):
        for key in ("fwd_ms", "fwd_bwd_ms"):
            r = None
            if other in row and "gsa" in row:
                r = row[other][key] / row["gsa"][key]
            out[f"{other}/{key[:-3]}"] = r
    out["fla/device"] = None  # the GPU's busy time, without host overhead (runs before it did not record it)
    if "fla" in row and "device_fwd_bwd_ms" in row["fla"] and "device_fwd_bwd_ms" in row.get("gsa", {}):
        out["fla/device"] = row["fla"]["device_fwd_bwd_ms"] / row["gsa"]["device_fwd_bwd_ms"]
    return out


def floors(row: dict, machine: dict | None) -> dict | None:
    """The op's floors at this row's shape (gsa.bench.cost: minimum bytes, and with the chunk states' traffic) in ms,
    from the run's measured ceilings in `machine`; None for a run that did not measure them."""
    if not machine or "copy_bytes_per_s" not in machine:
        return None
    from gsa.bench.cost import Cost

    el = 2  # bf16 and fp16
    cost = Cost.of(row["B"], row["T"], row["HQ"], row["H"], row["K"], row["V"], row["M"], el=el)
    return cost.floors_ms(machine["copy_bytes_per_s"], machine["bf16_flops_per_s"])


def _fmt(v, spec=".2f") -> str:
    return "-" if v is None else format(v, spec)


def line(row: dict) -> str:
    """One row as the run prints it."""
    g, r = row["gsa"], ratios(row)
    return (f"{row['name']:12s} ours {g['fwd_ms']:.3f} / {g['fwd_bwd_ms']:.3f} ms  fla/ours {_fmt(r['fla/fwd'])} / "
            f"{_fmt(r['fla/fwd_bwd'])} (device {_fmt(r['fla/device'])})  sdpa/ours {_fmt(r['sdpa/fwd'])} / "
            f"{_fmt(r['sdpa/fwd_bwd'])}  "
            f"first call {g['first_call_s']:.1f} s")


def table(rows: list[dict], machine: dict | None = None) -> str:
    """The results page's table: ratios first (> 1: ours faster; "device": of the GPU's busy time, kernels only),
    then our absolute times, and where the run measured the device's ceilings, the fwd+bwd floor with the chunk
    states' traffic and ours / that floor."""
    head = ("| shape | B, T, HQ/H, K=V, M, dtype | fla / ours fwd | fla / ours fwd+bwd | fla / ours device fwd+bwd | "
            "SDPA / ours fwd | SDPA / ours fwd+bwd | ours fwd ms | ours fwd+bwd ms | fla fwd+bwd ms | "
            "ours / fla extra MiB | "
            "ours first call s | floor fwd+bwd ms | ours / floor |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for row in rows:
        g, r = row["gsa"], ratios(row)
        f = row.get("fla")
        heads = f"{row['HQ']}" if row["HQ"] == row["H"] else f"{row['HQ']}/{row['H']}"
        dims = f"{row['B']}, {row['T']}, {heads}, {row['K']}, {row['M']}, {row['dtype']}"
        mem = "-" if f is None else f"{g['extra_mib']:.0f} / {f['extra_mib']:.0f}"
        fl = floors(row, machine)
        floor = None if fl is None else fl["fwd_bwd_states"]
        lines.append(f"| {row['name']} | {dims} | {_fmt(r['fla/fwd'])} | {_fmt(r['fla/fwd_bwd'])} | "
                     f"{_fmt(r['fla/device'])} | "
                     f"{_fmt(r['sdpa/fwd'])} | {_fmt(r['sdpa/fwd_bwd'])} | {g['fwd_ms']:.3f} | {g['fwd_bwd_ms']:.3f} | "
                     f"{_fmt(None if f is None else f['fwd_bwd_ms'], '.3f')} | {mem} | {g['first_call_s']:.1f} | "
                     f"{_fmt(floor, '.3f')} | {_fmt(None if floor is None else g['fwd_bwd_ms'] / floor)} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Bars of fla / ours and SDPA / ours (forward+backward) per shape, on a log axis with the parity line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in rows]
    rs = [ratios(r) for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(rows)), 4.2))
    width = 0.4
    for i, (key, label) in enumerate([("fla/fwd_bwd", "fla-core / ours"), ("sdpa/fwd_bwd", "causal SDPA / ours")]):
        xs = [j + (i - 0.5) * width for j in range(len(rows))]
        ax.bar(xs, [r[key] or 0 for r in rs], width, label=label)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log", base=2)
    ax.set_xticks(range(len(rows)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("time ratio, forward+backward (> 1: ours faster)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(payload: dict, out: Path) -> None:
    from gsa.bench.common import write_json

    write_json(out / "grid.json", payload)
    (out / "grid.md").write_text(table(payload["rows"], payload.get("machine")))
    plot(payload["rows"], out / "grid.png", payload.get("title", "GSA op grid"))
    print(f"wrote {out / 'grid.json'}, grid.md, grid.png")


def compare(base: dict, head: dict) -> str:
    """Markdown table of ours in two runs of the grid made in one GPU call (`base`, `head`: their grid.json payloads;
    benchmarks/recipes/ab.sh): per shape both runs make, forward and forward+backward ms (and GPU time where
    recorded), and head / base of forward+backward (< 1: head faster)."""
    rows = {r["name"]: r for r in base["rows"]}
    out = ["| shape | base fwd | head fwd | base fwd+bwd | head fwd+bwd | head / base | base device | head device |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in head["rows"]:
        b = rows.get(r["name"], {}).get("gsa")
        h = r.get("gsa")
        if b is None or h is None:
            continue
        out.append(f"| {r['name']} | {b['fwd_ms']:.3f} | {h['fwd_ms']:.3f} | {b['fwd_bwd_ms']:.3f} | "
                   f"{h['fwd_bwd_ms']:.3f} | {h['fwd_bwd_ms'] / b['fwd_bwd_ms']:.3f} | "
                   f"{_fmt(b.get('device_fwd_bwd_ms'), '.3f')} | {_fmt(h.get('device_fwd_bwd_ms'), '.3f')} |")
    if len(out) == 2:
        raise ValueError("the two runs share no shape timed by ours")
    return "\n".join(out)
