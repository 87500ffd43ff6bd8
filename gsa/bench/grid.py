"""Kernel grid: the chunked op (ours) vs fla-core's `chunk_gsa` vs causal SDPA of the same model width, over a grid
of shapes, side by side in one process. Reports ratios (their time / ours, > 1 means ours is faster), the absolute
times and a plot.

    gsa bench grid                               # every shape; fla-core where installed and already tuned
    gsa bench grid --shapes 1.3b,hd128 --fla always
    gsa bench grid --list                        # the grid, nothing timed
    gsa bench grid --warm-fla 1.3b               # fla-core's first call (compile + autotune) for one shape only
    gsa bench grid --report runs/bench/grid/grid.json   # re-render the table and plot of a finished run
    gsa bench grid --compare BASE/grid.json HEAD/grid.json   # ours in two runs side by side (recipes/ab.sh)

fla-core autotunes per (H, K, V) on its first call, for minutes a shape. `--warm-fla` runs only that first call; run
it once per shape (in parallel processes: benchmarks/recipes/kernels.sh) with Triton's cache on disk
(TRITON_CACHE_DIR, TRITON_CACHE_AUTOTUNING=1). It leaves a marker beside the cache, and `--fla tuned` (the default)
times fla-core only on shapes whose marker exists, so no timed run pays for autotuning.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from gsa.bench.grid_report import line, table, write

DEFAULT_OUT = Path("runs") / "bench" / "grid"


@dataclass(frozen=True)
class Shape:
    B: int
    T: int
    HQ: int
    H: int
    K: int
    V: int
    M: int
    dtype: str = "bf16"

    @property
    def width(self) -> int:
        """The model width the mixer serves (query heads x head dim)."""
        return self.HQ * self.K

    def tune_class(self) -> tuple:
        """What fla-core's autotuning is keyed on, near enough: its kernels key on the head counts, head dims (M
        is the K or V of its second pass) and dtype; only its cumsum keys on the batch, a cheap kernel. Shapes of
        one class share the autotune results, so warming one of them first lets the others start from its cache."""
        return (self.HQ, self.H, self.K, self.V, self.M, self.dtype)

    def label(self) -> str:
        heads = f"H{self.HQ}" if self.HQ == self.H else f"HQ{self.HQ}/H{self.H}"
        return f"B{self.B} T{self.T} {heads} K{self.K} V{self.V} M{self.M} {self.dtype}"


# One axis varied at a time around two centres (the 1.3B model's 4 heads of 512, and 16 heads of 128), at 16K tokens a
# batch unless the axis is the batch or the length itself.
GRID: dict[str, Shape] = {
    # head dim at model width 2048
    "hd64": Shape(8, 2048, 32, 32, 64, 64, 64),
    "hd128": Shape(8, 2048, 16, 16, 128, 128, 64),
    "hd256": Shape(8, 2048, 8, 8, 256, 256, 64),
    "1.3b": Shape(8, 2048, 4, 4, 512, 512, 64),
    # slots
    "hd128-m32": Shape(8, 2048, 16, 16, 128, 128, 32),
    "hd128-m128": Shape(8, 2048, 16, 16, 128, 128, 128),
    "1.3b-m32": Shape(8, 2048, 4, 4, 512, 512, 32),
    "1.3b-m128": Shape(8, 2048, 4, 4, 512, 512, 128),
    # length (16K tokens, then 64K)
    "1.3b-t4k": Shape(4, 4096, 4, 4, 512, 512, 64),
    "1.3b-t16k": Shape(1, 16384, 4, 4, 512, 512, 64),
    "1.3b-t64k": Shape(1, 65536, 4, 4, 512, 512, 64),
    "hd128-t16k": Shape(1, 16384, 16, 16, 128, 128, 64),
    # batch
    "1.3b-b1": Shape(1, 2048, 4, 4, 512, 512, 64),
    "1.3b-b16": Shape(16, 2048, 4, 4, 512, 512, 64),
    # head count
    "h1": Shape(8, 2048, 1, 1, 512, 512, 64),
    "h32-hd128": Shape(4, 2048, 32, 32, 128, 128, 64),
    # grouped query heads
    "gqa32-8": Shape(8, 2048, 32, 8, 128, 128, 64),
    "gqa16-4": Shape(8, 2048, 16, 4, 128, 128, 64),
    # fp16
    "1.3b-fp16": Shape(8, 2048, 4, 4, 512, 512, 64, "fp16"),
    "hd128-fp16": Shape(8, 2048, 16, 16, 128, 128, 64, "fp16"),
}


GATE_NORM = 8.0  # the layer's default normaliser of the slot gates


def _gate_norm(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shapes", default="all", help=f"'all' or comma-separated names from: {', '.join(GRID)}")
    p.add_argument("--fla", default="tuned", choices=["tuned", "always", "never"],
                   help="time fla-core's chunk_gsa (when installed): only on shapes warmed by --warm-fla (default), "
                        "on every shape (autotuning inside this run), or never")
    p.add_argument("--warm-fla", metavar="SHAPE", default=None,
                   help="only run fla-core's first forward+backward at SHAPE (compile + autotune), then mark it tuned")
    p.add_argument("--sdpa", action=argparse.BooleanOptionalAction, default=True,
                   help="time causal SDPA of the same model width (head dim 128; default on)")
    p.add_argument("--profile", action="store_true", help="also record our per-kernel times at every shape")
    p.add_argument("--launch", action="append", default=[], metavar="JSON",
                   help="also time ours with these launch options over gsa.ops.triton.SETTINGS.launch, e.g. "
                        "'{\"ds\": {\"num_warps\": 8}}' (repeatable: one variant each, kept in the JSON as gsa@1, ...)")
    p.add_argument("--settings", action="append", default=[], metavar="JSON",
                   help="also time ours with these gsa.ops.triton.SETTINGS fields, e.g. "
                        "'{\"chunk_states\": \"input\"}'; a \"launch\" field as --launch's (repeatable: one "
                        "variant each, kept in the JSON after the --launch ones as gsa@N)")
    p.add_argument("--gate-norm", type=_gate_norm, default=GATE_NORM, metavar="N",
                   help="slot gates g = logsigmoid(randn) / N (default %(default)s, the layer's; at 1 every chunk's "
                        "decay span is past the whole-chunk kernels' bound, so their fallback path is timed)")
    p.add_argument("--list", action="store_true", help="print the grid and exit")
    p.add_argument("--list-first", action="store_true",
                   help="print the names of the first shape of each fla-core autotune class (Shape.tune_class) of "
                        "--shapes, and exit: the shapes to warm first")
    p.add_argument("--report", type=Path, default=None, metavar="JSON",
                   help="re-render the table and plot of a finished run's JSON, then exit")
    p.add_argument("--compare", type=Path, nargs=2, default=None, metavar=("BASE", "HEAD"),
                   help="print ours in two finished runs' grid.json side by side (head / base), then exit "
                        "(benchmarks/recipes/ab.sh)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")


def select(names: str) -> dict[str, Shape]:
    """The shapes named by --shapes ('all' or a comma-separated list); unknown names are refused by name."""
    if names.strip() == "all":
        return dict(GRID)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in GRID]
    if unknown or not wanted:
        raise SystemExit(f"gsa bench grid: error: unknown shape(s) {unknown or names!r}; known: {', '.join(GRID)}")
    return {n: GRID[n] for n in wanted}


def _marker(name: str) -> Path:
    """Where --warm-fla records that fla-core's autotuning finished for a shape (beside Triton's cache)."""
    root = Path(os.environ.get("TRITON_CACHE_DIR", Path.home() / ".triton" / "cache"))
    return root / "gsa-fla-tuned" / name


def _torch_dtype(torch, name: str):
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[name]


def _inputs(torch, x: Shape, seed: int = 0, gate_norm: float = GATE_NORM, device: str = "cuda") -> dict:
    """Layer-like inputs: g = logsigmoid(randn) / gate_norm and s = 1 - exp(g). At the default 8 a chunk's decay
    span (max over slots of the log decay over its 64 steps) is 7-9 at 64 slots; at 2 it is 28-35, around the bound
    under which kernel_a and kernel_ds factor a whole chunk at once (tiles.chunk_span_max = 30); at 1 it is 56-69,
    past it: every chunk takes their fallback path, which is then what is timed."""
    gen = torch.Generator(device=device).manual_seed(seed)
    dt = _torch_dtype(torch, x.dtype)

    def rnd(*size):
        return torch.randn(*size, device=device, generator=gen)

    g = torch.nn.functional.logsigmoid(rnd(x.B, x.T, x.H, x.M)) / gate_norm
    out = dict(q=rnd(x.B, x.T, x.HQ, x.K).to(dt), k=rnd(x.B, x.T, x.H, x.K).to(dt), v=rnd(x.B, x.T, x.H, x.V).to(dt),
               s=(1 - g.exp()).to(dt), g=g.to(dt))
    for t in out.values():
        t.requires_grad_(True)
    return out


def _impls(torch, x: Shape, fla: bool) -> list[tuple[str, object]]:
    from gsa.ops.triton import chunk_gsa

    scale = x.K**-0.5
    impls = [("gsa", lambda a: chunk_gsa(a["q"], a["k"], a["v"], a["s"], a["g"], scale, None, False, None)[0])]
    if fla:
        from fla.ops.gsa import chunk_gsa as fla_chunk_gsa

        impls.append(("fla", lambda a: fla_chunk_gsa(a["q"], a["k"], a["v"], a["s"], a["g"], scale=scale)[0]))
    return impls


def _sdpa_case(torch, x: Shape):
    """Causal SDPA for a Transformer of the same width: width / 128 heads of 128 (at least one)."""
    heads = max(1, x.width // 128)
    dt = _torch_dtype(torch, x.dtype)
    a = {n: torch.randn(x.B, heads, x.T, 128, device="cuda", dtype=dt, requires_grad=True) for n in "qkv"}
    sdpa = torch.nn.functional.scaled_dot_product_attention
    return a, (lambda a: sdpa(a["q"], a["k"], a["v"], is_causal=True)), torch.randn_like(a["q"])


def warm_fla(name: str) -> int:
    """fla-core's first forward+backward at one shape: Triton compiles and autotunes its kernels into the on-disk
    cache; a marker records that the shape is tuned."""
    import torch

    x = GRID[name]
    a = _inputs(torch, x)
    fwd = dict(_impls(torch, x, True))["fla"]
    t0 = time.perf_counter()
    torch.autograd.backward(fwd(a), torch.randn(x.B, x.T, x.HQ, x.V, device="cuda", dtype=a["q"].dtype))
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    m = _marker(name)
    m.parent.mkdir(parents=True, exist_ok=True)
    m.write_text(f"{dt:.1f}\n")
    print(f"fla-core first call at {name} ({x.label()}): {dt:.1f} s", flush=True)
    return 0


def _json_object(flag: str, spec: str):
    """One --launch / --settings value parsed as JSON, or a SystemExit naming the flag."""
    try:
        return json.loads(spec)
    except json.JSONDecodeError as e:
        raise SystemExit(f"gsa bench grid: error: {flag} {spec!r} is not JSON ({e.msg})") from None


def _launch_entries(flag: str, spec: str, v) -> dict:
    """v (parsed from `flag`'s value `spec`): {kernel name: {launch option: value}}, or a SystemExit naming what is
    wrong."""
    from gsa.ops.triton.settings import LAUNCH_NAMES

    if not isinstance(v, dict) or not all(isinstance(o, dict) for o in v.values()):
        raise SystemExit(f"gsa bench grid: error: {flag} {spec!r} must map kernel names to option objects")
    unknown = sorted(set(v) - LAUNCH_NAMES)
    if unknown:
        raise SystemExit(f"gsa bench grid: error: {flag} names unknown kernel(s) {unknown}; known: "
                         f"{sorted(LAUNCH_NAMES)}")
    return v


def launch_variants(specs: list[str]) -> list[dict]:
    """--launch values: each a JSON object {kernel name: {launch option: value}}; refused by name otherwise."""
    return [{"launch": _launch_entries("--launch", spec, _json_object("--launch", spec))} for spec in specs]


def settings_variants(specs: list[str]) -> list[dict]:
    """--settings values: each a JSON object of gsa.ops.triton.SETTINGS fields; unknown fields refused by name. A
    "launch" field is taken as a --launch value (entries over SETTINGS.launch), so one variant can change both."""
    import dataclasses

    from gsa.ops.triton.settings import KernelSettings

    fields = {f.name for f in dataclasses.fields(KernelSettings)}
    out = []
    for spec in specs:
        v = _json_object("--settings", spec)
        if not isinstance(v, dict) or set(v) - fields:
            raise SystemExit(f"gsa bench grid: error: --settings {spec!r} must be an object of SETTINGS fields; "
                             f"fields: {sorted(fields)}")
        if "launch" in v:
            _launch_entries("--settings' launch field", spec, v["launch"])
        out.append(v)
    return out


def measure(shapes: dict[str, Shape], fla_mode: str, sdpa: bool, profile: bool, done=None,
            variants: list[dict] = (), gate_norm: float = GATE_NORM) -> list[dict]:
    """Time every shape (and ours under each variant: {"launch": entries over SETTINGS.launch, other SETTINGS
    fields}) on gates of normaliser `gate_norm` (_inputs); `done(rows)` is called after each (the caller saves
    partial results)."""
    import torch

    from gsa.bench.common import device_ms, fwd_bwd_step, profile_kernels, time_fwd_bwd
    from gsa.ops.triton import SETTINGS

    try:
        import fla.ops.gsa  # noqa: F401
        have_fla = True
    except ImportError:
        have_fla = False
    rows = []
    for name, x in shapes.items():
        with_fla = have_fla and (fla_mode == "always" or (fla_mode == "tuned" and _marker(name).exists()))
        row = dict(name=name, **asdict(x), fla_timed=with_fla)
        a = _inputs(torch, x, gate_norm=gate_norm)
        do = torch.randn(x.B, x.T, x.HQ, x.V, device="cuda", dtype=a["q"].dtype)
        impls = dict(_impls(torch, x, with_fla))
        kernels = {}
        for impl, fwd in impls.items():
            row[impl] = time_fwd_bwd(fwd, a, do)
            # the GPU's busy time too: fla-core's wall time of one op is mostly host overhead at some shapes
            kernels[impl] = profile_kernels(fwd_bwd_step(fwd, a, do), 5, f"{name} {impl}", top=12,
                                            quiet=not (profile and impl == "gsa"))
            row[impl]["device_fwd_bwd_ms"] = device_ms(kernels[impl])
        for i, variant in enumerate(variants, 1):
            changes = {**variant, "launch": {**SETTINGS.launch, **variant.get("launch", {})}}
            with SETTINGS.override(**changes):
                row[f"gsa@{i}"] = dict(time_fwd_bwd(impls["gsa"], a, do), **variant)
                kernels[f"gsa@{i}"] = profile_kernels(fwd_bwd_step(impls["gsa"], a, do), 5, "", quiet=True)
                row[f"gsa@{i}"]["device_fwd_bwd_ms"] = device_ms(kernels[f"gsa@{i}"])
            print(f"  {name} gsa@{i} {json.dumps(variant)}: {row[f'gsa@{i}']['fwd_ms']:.3f} / "
                  f"{row[f'gsa@{i}']['fwd_bwd_ms']:.3f} ms (device {row[f'gsa@{i}']['device_fwd_bwd_ms']:.3f})",
                  flush=True)
        if profile:
            row["profile"] = kernels["gsa"]
            if "fla" in kernels:
                row["fla_profile"] = kernels["fla"]
            for i in range(1, len(variants) + 1):  # each variant's kernels, to see which of them a change moved
                row[f"gsa@{i}"]["profile"] = kernels[f"gsa@{i}"]
        del a, do
        if sdpa:
            a, fwd, do = _sdpa_case(torch, x)
            row["sdpa"] = time_fwd_bwd(fwd, a, do)
            del a, do
        torch.cuda.empty_cache()
        rows.append(row)
        print(line(row), flush=True)
        if done is not None:
            done(rows)
    return rows


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name, x in select(args.shapes).items():
            print(f"{name:12s} {x.label()}  (width {x.width})")
        return 0
    if args.list_first:
        firsts = {}
        for name, x in select(args.shapes).items():
            firsts.setdefault(x.tune_class(), name)
        print("\n".join(firsts.values()))
        return 0
    if args.compare is not None:
        from gsa.bench.grid_report import compare

        base, head = (json.loads(p.read_text()) for p in args.compare)
        try:
            print(compare(base, head))
        except ValueError as e:
            raise SystemExit(f"gsa bench grid: error: --compare: {e}") from None
        return 0
    if args.report is not None:
        payload = json.loads(args.report.read_text())
        write(payload, args.out if args.out != DEFAULT_OUT else args.report.parent)
        print(table(payload["rows"], payload.get("machine")))
        return 0
    variants = launch_variants(args.launch) + settings_variants(args.settings)
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("gsa bench grid: error: needs a CUDA device (use --list or --report on a CPU)")
    if args.warm_fla is not None:
        select(args.warm_fla)
        return warm_fla(args.warm_fla)
    from gsa.bench.common import machine

    shapes = select(args.shapes)
    info = machine(torch.device("cuda"))
    from triton.testing import do_bench

    from gsa.bench.cost import ceilings

    info["copy_bytes_per_s"], info["bf16_flops_per_s"] = ceilings(torch, do_bench)  # for the report's floors
    info["gate_norm"] = args.gate_norm
    from gsa.ops.triton.chunks import BT

    info["chunk_length"] = BT  # GSA_TRITON_CHUNK, fixed at import: an A/B of it takes one process per length
    try:
        import fla

        info["fla-core"] = getattr(fla, "__version__", "installed")
    except ImportError:
        info["fla-core"] = None
    title = (f"GSA op grid, {info.get('gpu')}, torch {info['torch']}, triton {info.get('triton')}, "
             f"fla-core {info['fla-core']}" + (f", chunks of {BT}" if BT != 64 else ""))
    from gsa.bench.common import write_json

    rows = measure(shapes, args.fla, args.sdpa, args.profile,
                   done=lambda rows: write_json(args.out / "grid.json", dict(title=title, machine=info, rows=rows)),
                   variants=variants, gate_norm=args.gate_norm)
    payload = dict(title=title, machine=info, rows=rows)
    write(payload, args.out)
    print(table(rows, info))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gsa bench grid", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
