"""The `gsa` command (also `python -m gsa`): one subcommand per job.

Subcommands live in a registry (`SUBCOMMANDS`) of `Subcommand(name, help, add_arguments, run)`; a new one (train,
eval, convert, bench) is added with `register(...)` next to the others at the bottom of this file. `add_arguments`
must stay cheap: heavy imports (torch, transformers) happen inside `run`, so `gsa --help` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gsa.errors import InputError, one_line, run_command


@dataclass(frozen=True)
class Subcommand:
    """name: the word after `gsa`; help: one line for `gsa --help`; add_arguments(parser) declares the flags
    (kebab-case, each with a help string); run(args) does the work and returns the exit code."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


SUBCOMMANDS: dict[str, Subcommand] = {}


def register(command: Subcommand) -> Subcommand:
    if command.name in SUBCOMMANDS:
        raise ValueError(f"gsa subcommand {command.name!r} is already registered")
    SUBCOMMANDS[command.name] = command
    return command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gsa", description="Gated Slot Attention: train, generate, evaluate.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in SUBCOMMANDS.values():
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(_run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]), run the chosen subcommand, return its exit code: 2 with one line
    ``gsa <command>: error: ...`` on stderr for bad input (gsa.errors.InputError), as argparse does for bad flags."""
    from gsa.train.cli import parse_args

    args = parse_args(build_parser(), argv)
    prog = " ".join(["gsa", args.command] + ([args.eval_task] if args.command == "eval" else []))
    return run_command(prog, args._run, args)


# --- generate (flags and logic live in gsa.generate) ---------------------------------------------------------


def _add_generate_arguments(p: argparse.ArgumentParser) -> None:
    from gsa.generate import add_arguments

    add_arguments(p)


def _run_generate(args: argparse.Namespace) -> int:
    from gsa.generate import run

    return run(args)


register(
    Subcommand(
        name="generate",
        help="generate text (or token ids) from a saved GSA model; prints the prompt followed by the continuation",
        add_arguments=_add_generate_arguments,
        run=_run_generate,
    )
)

# --- convert (the logic lives in gsa.convert) ----------------------------------------------------------------


def _add_convert_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="src", required=True, type=Path,
                   help="Llama/Mistral/Qwen2 checkpoint directory, or an fla GSA checkpoint (recognised by its "
                        "config: converted exactly, no T2R options), or with --to-format fla a GSA model of ours")
    p.add_argument("--to", dest="dst", required=True, type=Path, help="output directory (save_pretrained layout)")
    p.add_argument("--to-format", choices=["gsa", "fla"], default="gsa",
                   help="gsa (default): a GSAForCausalLM; fla: write a GSA model of ours in fla's format")
    p.add_argument("--gguf-file", help="name of a GGUF file inside --from (needs the gguf package)")
    p.add_argument("--num-slots", type=int, default=64, help="slots per head, M (default 64)")
    p.add_argument("--init", choices=["normal", "keys"], default="normal", help="f_proj init (default normal)")
    p.add_argument("--init-std", type=float, default=0.02, help="f_proj init scale (default 0.02)")
    p.add_argument("--gate-logit-normalizer", type=float, default=8.0,
                   help="tau; the initial forget rate is 0.5 ** (1 / tau) (default 8: ~0.917)")
    p.add_argument("--feature-map", choices=["identity", "swish", "learned"], default="identity",
                   help="map on q, k, v (default identity: the teacher's; swish: the paper's layer; learned: per-head "
                        "maps on q, k that start as the identity, to fit to the teacher's attention weights)")
    p.add_argument("--output-norm", action="store_true", help="keep GSA's swish + RMSNorm before o_proj (off)")
    p.add_argument("--window", type=int, default=0,
                   help="hybrid student: keep the teacher's attention over this many recent tokens (default 0: off)")
    p.add_argument("--sinks", type=int, default=0, help="with --window: also attend to the first N tokens (default 0)")
    p.add_argument("--gate-bias", action="store_true",
                   help="f_proj bias spread over the slots: initial memories of ~2 to ~440 tokens, not ~12 each (off)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="student dtype (default: teacher's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the f_proj init (default 0)")


# The T2R options: they describe new layers, so they do not apply to an fla checkpoint or to --to-format fla.
_T2R_OPTIONS = ("gguf_file", "num_slots", "init", "init_std", "gate_logit_normalizer", "feature_map", "output_norm",
                "window", "sinks", "gate_bias", "seed")


def _run_fla_convert(args: argparse.Namespace, dtype) -> Path:
    """`gsa convert` from an fla GSA checkpoint, or (--to-format fla) to one; returns the output directory."""
    defaults = argparse.ArgumentParser()
    _add_convert_arguments(defaults)
    given = [f"--{k.replace('_', '-')}" for k in _T2R_OPTIONS if getattr(args, k) != defaults.get_default(k)]
    if given:
        raise InputError(f"{', '.join(given)} set up a T2R conversion; an fla conversion is exact and takes only "
                         "--dtype")
    from gsa.convert.fla import convert_fla, to_fla

    if args.to_format == "gsa":
        return convert_fla(args.src, args.dst, dtype)
    from gsa.models import GSAForCausalLM

    model = GSAForCausalLM.from_pretrained(args.src)
    return to_fla(model if dtype is None else model.to(dtype), args.dst, tokenizer_from=args.src)


def _run_convert(args: argparse.Namespace) -> int:
    if not args.src.is_dir():
        raise InputError(f"--from {args.src} is not a directory")
    import torch

    from gsa.convert import convert
    from gsa.convert.fla import is_fla_checkpoint

    dtype = getattr(torch, args.dtype) if args.dtype else None
    try:
        if args.to_format == "fla" or is_fla_checkpoint(args.src):
            dst = _run_fla_convert(args, dtype)
        else:
            dst = convert(
                args.src, args.dst, gguf_file=args.gguf_file, num_slots=args.num_slots, init=args.init,
                init_std=args.init_std, gate_logit_normalizer=args.gate_logit_normalizer,
                feature_map=args.feature_map, use_output_norm=args.output_norm, window_size=args.window,
                num_sink_tokens=args.sinks, gate_bias=args.gate_bias, dtype=dtype, seed=args.seed,
            )
    except ValueError as e:  # UnsupportedModelError (names what the teacher has) or an invalid option
        raise InputError(one_line(e)) from None
    print(f"gsa convert: wrote {dst}")
    return 0


register(
    Subcommand(
        name="convert",
        help="convert a Llama/Mistral/Qwen2 checkpoint (or GGUF file) into a GSA model (T2R), or an fla GSA "
             "checkpoint to ours and back (exact)",
        add_arguments=_add_convert_arguments,
        run=_run_convert,
    )
)

# --- train, eval: flags and logic live in gsa.train and gsa.eval (each also has its own main) --------------


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    from gsa.train.cli import add_arguments

    add_arguments(p)


def _run_train(args: argparse.Namespace) -> int:
    import gsa.convert  # noqa: F401  (registers the trainer's model type "t2r" and its distillation objective)
    from gsa.train.cli import run

    return run(args)


def train_main(argv: list[str] | None = None) -> int:
    """`python -m gsa.train` (and `torchrun ... -m gsa.train`): `gsa train` under that program name."""
    import gsa.convert  # noqa: F401  (as in _run_train)
    from gsa.train.cli import main

    return main(argv)


def _add_eval_arguments(p: argparse.ArgumentParser) -> None:
    from gsa.eval.cli import add_arguments

    add_arguments(p)


def _run_eval(args: argparse.Namespace) -> int:
    from gsa.eval.cli import run

    return run(args)


register(Subcommand(name="train", help="train a GSA model (or a baseline) from a TOML config; see configs/",
                    add_arguments=_add_train_arguments, run=_run_train))
register(Subcommand(name="eval", help="evaluate a saved model: ppl (perplexity, bits per byte), mqar (recall), harness "
                         "(lm-eval tasks); tasks builds multiple-choice tasks from held-out text",
                    add_arguments=_add_eval_arguments, run=_run_eval))

# --- bench --------------------------------------------------------------------------------------------------

BENCHMARKS = {
    "ops": "kernels: ours vs causal SDPA vs fla (fwd, fwd+bwd, decode step, floors)",
    "grid": "kernels over a grid of shapes: ours vs fla-core vs causal SDPA of the same width, as ratios",
    "train": "training tokens/s and peak memory, GSA vs a Llama-style Transformer",
    "decode": "ms/token and time to first token after long prompts, GSA vs a Transformer",
}


def _add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("which", choices=sorted(BENCHMARKS),
                   help="; ".join(f"{k}: {v}" for k, v in BENCHMARKS.items()))
    p.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own flags (gsa bench WHICH --help)")


def _run_bench(args: argparse.Namespace) -> int:
    import importlib

    return importlib.import_module(f"gsa.bench.{args.which}").main(args.args)


register(Subcommand(name="bench", help="benchmarks (ops, grid, train, decode): tables, JSON and PNG",
                    add_arguments=_add_bench_arguments, run=_run_bench))

# --- demo ---------------------------------------------------------------------------------------------------


def _add_demo_arguments(p: argparse.ArgumentParser) -> None:
    from gsa.demo import add_arguments

    add_arguments(p)


def _run_demo(args: argparse.Namespace) -> int:
    from gsa.demo import run

    return run(args)


register(Subcommand(name="demo", help="the README's main job: train a small GSA LM on bundled text, show "
                    "perplexity and a sample", add_arguments=_add_demo_arguments, run=_run_demo))

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
