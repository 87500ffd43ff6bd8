"""``gsa train`` (also ``python -m gsa.train`` and, under torchrun, ``torchrun ... -m gsa.train``)."""

from __future__ import annotations

import argparse
import json

from gsa.errors import run_command

from .config import Config, load_config

DESCRIPTION = ("Train a GSA (or baseline) language model or MQAR model. Runs as one process, or under "
               "`torchrun --nproc_per_node=N -m gsa.train ...` with DDP or FSDP2 (train.parallel).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="TOML config file (see configs/)")
    p.add_argument("--max-steps", type=int, help="override train.max_steps")
    p.add_argument("--output-dir", help="override output_dir (checkpoints, metrics.jsonl, model/)")
    earlier = p.add_mutually_exclusive_group()
    earlier.add_argument("--resume", action="store_true",
                         help="continue from the newest valid checkpoint in the output directory")
    earlier.add_argument("--overwrite", action="store_true",
                         help="delete an earlier run in the output directory (its checkpoints, model/, metrics) "
                              "and start again; without --resume or --overwrite such a directory is refused")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides such as train.micro_batch_size=4 model.num_slots=32 (anywhere on the line)")


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """parser.parse_args(argv), except that KEY=VALUE overrides may come anywhere on the line: argparse gives a
    positional list one run of words, so `a=1 --max-steps 2 b=3` would reject b=3. Any other unknown word is an
    error, as with parse_args."""
    args, extra = parser.parse_known_args(argv)
    if extra and (not hasattr(args, "overrides") or any(w.startswith("-") or "=" not in w for w in extra)):
        parser.error("unrecognized arguments: " + " ".join(extra))
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def config_from_args(args: argparse.Namespace) -> Config:
    """The config named by --config with the KEY=VALUE overrides, then --max-steps and --output-dir on top."""
    overrides = list(args.overrides)
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.output_dir is not None:
        overrides.append(f"output_dir={json.dumps(args.output_dir)}")
    return load_config(args.config, overrides)


def run(args: argparse.Namespace) -> int:
    from .loop import format_value, train

    cfg = config_from_args(args)
    try:
        summary = train(cfg, resume=args.resume, overwrite=args.overwrite)
    except KeyboardInterrupt:
        return 130
    if summary["rank"] != 0:
        return 0
    if "eval_ppl" in summary:
        print(f"held-out perplexity {summary['eval_ppl']:.3f} (loss {summary['eval_loss']:.4f})")
    if "mqar_acc" in summary:
        print("MQAR accuracy by number of pairs: " + format_value(summary["mqar_acc"]))
    print(f"model saved to {summary['model_dir']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gsa.train", description=DESCRIPTION)
    add_arguments(p)
    return run_command(p.prog, run, parse_args(p, argv))


if __name__ == "__main__":  # pragma: no cover
    # The package's entry point (gsa/train/__main__.py), which first loads what the trainer's registry needs
    # (gsa.convert); main() alone would refuse a t2r or [distill] config as not registered.
    import runpy

    runpy.run_module("gsa.train", run_name="__main__", alter_sys=True)
