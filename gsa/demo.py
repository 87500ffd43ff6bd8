"""`gsa demo` (the README's main job, `make demo`): train a small GSA language model end to end.

On any fresh machine, with no download: build the corpus from the Python installation's own documentation, train
a BPE tokenizer on it, train a small GSA model (GPU if present, else CPU; a few minutes), then print the held-out
perplexity, a generated sample and where the checkpoint is. Progress is shown throughout; an interrupted demo
resumes from its last checkpoint when run again with --resume.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from gsa.errors import InputError, run_command

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.toml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"training config (default {DEFAULT_CONFIG})")
    p.add_argument("--output-dir", default=None, help="where checkpoints and the model go (default: the config's)")
    p.add_argument("--max-steps", type=int, default=None, help="override the config's train.max_steps")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in the output dir (else an earlier demo run there is "
                        "replaced)")
    p.add_argument("--prompt", default="The list type", help="prompt of the generated sample")
    p.add_argument("--max-new-tokens", type=int, default=60, help="length of the generated sample (default 60)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, as for gsa train (e.g. train.micro_batch_size=4)")


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoTokenizer

    import gsa.convert  # noqa: F401  (registers the trainer's model type "t2r" and its distillation objective)
    from gsa.models import GSAForCausalLM
    from gsa.train.cli import config_from_args
    from gsa.train.loop import train
    from gsa.train.preflight import earlier_run

    if not args.config.exists():
        raise InputError(f"no config at {args.config} (run from a checkout of the repository, or pass --config "
                         "FILE.toml)")
    if args.max_new_tokens < 1:
        raise InputError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if not args.prompt:
        raise InputError("--prompt is empty: give some text to continue")
    cfg = config_from_args(args)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"gsa demo: training a small GSA language model on Python's own documentation ({device}); "
          f"config {args.config}")
    # the demo's output directory is its own: run again, the demo starts again (unless --resume)
    replace = bool(earlier_run(cfg.output_dir)) and not args.resume
    if replace:
        print(f"gsa demo: replacing the earlier run in {cfg.output_dir} (--resume continues it instead)")
    t0 = time.time()
    summary = train(cfg, resume=args.resume, overwrite=replace)
    minutes = (time.time() - t0) / 60
    model_dir = Path(summary["model_dir"])

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = GSAForCausalLM.from_pretrained(model_dir).to(device).eval()
    ids = tok(args.prompt, return_tensors="pt").input_ids.to(device)
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=args.max_new_tokens, do_sample=True, temperature=0.8, top_k=50,
                             pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    print()
    print(f"trained {summary['step']} steps, {summary['num_params'] / 1e6:.2f}M parameters, in {minutes:.1f} min")
    if "eval_ppl" in summary:
        print(f"held-out perplexity: {summary['eval_ppl']:.2f}")
    print(f"sample: {tok.decode(out[0], skip_special_tokens=True)}")
    print(f"checkpoint: {model_dir}  (gsa generate --model {model_dir} --prompt \"...\")")
    return 0


def main(argv: list[str] | None = None) -> int:
    from gsa.train.cli import parse_args

    p = argparse.ArgumentParser(prog="gsa demo", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run_command(p.prog, run, parse_args(p, argv))


if __name__ == "__main__":
    raise SystemExit(main())
