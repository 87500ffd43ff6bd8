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


# --- generate -----------------------------------------------------------------------------------------------


def _add_generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, type=Path, help="directory written by save_pretrained (a GSA model)")
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="prompt text (needs a tokenizer saved in the model directory)")
    prompt.add_argument("--prompt-ids", help="prompt token ids, comma-separated, e.g. 1,2,3")
    p.add_argument("--max-new-tokens", type=int, default=32, help="number of tokens to generate (default 32)")
    p.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, help="sampling temperature (> 0; default 1.0; needs --do-sample)")
    p.add_argument("--top-k", type=int, help="sample among the k most likely tokens (needs --do-sample)")
    p.add_argument("--top-p", type=float, help="nucleus sampling mass in (0, 1] (needs --do-sample)")
    p.add_argument("--seed", type=int, default=0, help="random seed for sampling (default 0)")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    p.add_argument("--static", action="store_true",
                   help="decode with gsa.models.StaticDecoder (owned in-place state buffers, device-side sampling)")
    p.add_argument("--compile", action="store_true",
                   help="StaticDecoder with a torch.compile'd step, captured in a CUDA graph on CUDA (implies --static)")


def _has_tokenizer(model_dir: Path) -> bool:
    return any((model_dir / name).exists() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


def _parse_ids(text: str) -> list[int]:
    try:
        ids = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--prompt-ids must be comma-separated integers, got {text!r}") from None
    if not ids:
        raise InputError(f"--prompt-ids must name at least one token id, got {text!r}")
    return ids


def _cut_after_eos(ids: list[int], prompt_len: int, eos) -> list[int]:
    """Drop what follows the first end-of-sequence token of the continuation (generate() stops there)."""
    eos = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    for i in range(prompt_len, len(ids)):
        if ids[i] in eos:
            return ids[: i + 1]
    return ids


def _check_generate_args(args: argparse.Namespace) -> dict:
    """The sampling options given (InputError for the first flag out of range, before anything is loaded)."""
    sampling = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p}
    given = {k: v for k, v in sampling.items() if v is not None}
    if given and not args.do_sample:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise InputError(f"{flags} only apply with --do-sample")
    if args.max_new_tokens < 1:
        raise InputError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.temperature is not None and not 0 < args.temperature < float("inf"):
        raise InputError(f"--temperature must be a finite number > 0, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise InputError(f"--top-k must be >= 1, got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise InputError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.prompt == "":
        raise InputError("--prompt is empty: give some text to continue")
    return given


def _prompt(args: argparse.Namespace, tokenizer, vocab_size: int):
    """The prompt's token ids, [1, T]."""
    import torch

    if args.prompt is not None:
        ids = tokenizer(args.prompt, return_tensors="pt").input_ids
        if ids.shape[1] == 0:
            raise InputError(f"--prompt {args.prompt!r} gives no tokens")
        return ids
    ids = _parse_ids(args.prompt_ids)
    if not all(0 <= i < vocab_size for i in ids):
        raise InputError(f"--prompt-ids must be ids in [0, {vocab_size}), got {args.prompt_ids!r}")
    return torch.tensor([ids])


def _run_generate(args: argparse.Namespace) -> int:
    given = _check_generate_args(args)

    import torch
    from transformers import AutoTokenizer

    from gsa.models.loading import check_model_dir, load_pretrained, resolve_device

    device = resolve_device(args.device)
    if args.prompt_ids is not None:
        _parse_ids(args.prompt_ids)
    check_model_dir(args.model, accept=["gsa"])
    if args.prompt is not None and not _has_tokenizer(args.model):
        raise InputError(f"{args.model} has no tokenizer; pass --prompt-ids instead of --prompt")
    model = load_pretrained(args.model, accept=["gsa"]).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model) if _has_tokenizer(args.model) else None
    ids = _prompt(args, tokenizer, model.config.vocab_size).to(device)

    torch.manual_seed(args.seed)
    config = model.config
    pad = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
    if isinstance(pad, list):
        pad = pad[0]
    if args.static or args.compile:
        from gsa.models import StaticDecoder

        decoder = StaticDecoder(model, 1, compile=args.compile, cuda_graph=args.compile and device.type == "cuda")
        out = decoder.generate(ids, max_new_tokens=args.max_new_tokens, do_sample=args.do_sample,
                               eos_token_id=config.eos_token_id, pad_token_id=0 if pad is None else pad,
                               **given)[0].tolist()
        out = _cut_after_eos(out, ids.shape[1], config.eos_token_id)
    else:
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=args.max_new_tokens,
            do_sample=args.do_sample,
            pad_token_id=pad,
            **given,
        )[0].tolist()
    if tokenizer is not None:
        print(tokenizer.decode(out, skip_special_tokens=True))
    else:
        print(",".join(str(i) for i in out))
    return 0


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
    p.add_argument("--from", dest="src", required=True, type=Path, help="Llama/Mistral/Qwen2 checkpoint directory")
    p.add_argument("--to", dest="dst", required=True, type=Path, help="output directory (save_pretrained layout)")
    p.add_argument("--gguf-file", help="name of a GGUF file inside --from (needs the gguf package)")
    p.add_argument("--num-slots", type=int, default=64, help="slots per head, M (default 64)")
    p.add_argument("--init", choices=["normal", "keys"], default="normal", help="f_proj init (default normal)")
    p.add_argument("--init-std", type=float, default=0.02, help="f_proj init scale (default 0.02)")
    p.add_argument("--gate-logit-normalizer", type=float, default=8.0,
                   help="tau; the initial forget rate is 0.5 ** (1 / tau) (default 8: ~0.917)")
    p.add_argument("--feature-map", choices=["identity", "swish"], default="identity",
                   help="map on q, k, v (default identity: the teacher's; swish: the paper's layer)")
    p.add_argument("--output-norm", action="store_true", help="keep GSA's swish + RMSNorm before o_proj (off)")
    p.add_argument("--window", type=int, default=0,
                   help="hybrid student: keep the teacher's attention over this many recent tokens (default 0: off)")
    p.add_argument("--sinks", type=int, default=0, help="with --window: also attend to the first N tokens (default 0)")
    p.add_argument("--gate-bias", action="store_true",
                   help="f_proj bias spread over the slots: initial memories of ~2 to ~440 tokens, not ~12 each (off)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="student dtype (default: teacher's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the f_proj init (default 0)")


def _run_convert(args: argparse.Namespace) -> int:
    if not args.src.is_dir():
        raise InputError(f"--from {args.src} is not a directory")
    import torch

    from gsa.convert import convert

    try:
        dst = convert(
            args.src, args.dst, gguf_file=args.gguf_file, num_slots=args.num_slots, init=args.init,
            init_std=args.init_std, gate_logit_normalizer=args.gate_logit_normalizer, feature_map=args.feature_map,
            use_output_norm=args.output_norm, window_size=args.window, num_sink_tokens=args.sinks,
            gate_bias=args.gate_bias, dtype=getattr(torch, args.dtype) if args.dtype else None,
            seed=args.seed,
        )
    except ValueError as e:  # UnsupportedModelError (names what the teacher has) or an invalid option
        raise InputError(one_line(e)) from None
    print(f"gsa convert: wrote {dst}")
    return 0


register(
    Subcommand(
        name="convert",
        help="convert a Llama/Mistral/Qwen2 checkpoint (or GGUF file) into a GSA model (T2R)",
        add_arguments=_add_convert_arguments,
        run=_run_convert,
    )
)

# --- train, eval: flags and logic live in gsa.train and gsa.eval (each also has its own main) --------------


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    from gsa.train.cli import add_arguments

    add_arguments(p)


def _run_train(args: argparse.Namespace) -> int:
    from gsa.train.cli import run

    return run(args)


def _add_eval_arguments(p: argparse.ArgumentParser) -> None:
    from gsa.eval.cli import add_arguments

    add_arguments(p)


def _run_eval(args: argparse.Namespace) -> int:
    from gsa.eval.cli import run

    return run(args)


register(Subcommand(name="train", help="train a GSA model (or a baseline) from a TOML config; see configs/",
                    add_arguments=_add_train_arguments, run=_run_train))
register(Subcommand(name="eval", help="evaluate a saved model: ppl (perplexity, bits per byte), mqar (recall)",
                    add_arguments=_add_eval_arguments, run=_run_eval))

# --- bench --------------------------------------------------------------------------------------------------

BENCHMARKS = {
    "ops": "kernels: ours vs causal SDPA vs fla (fwd, fwd+bwd, decode step, floors)",
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


register(Subcommand(name="bench", help="benchmarks (ops, train, decode); JSON and PNG under benchmarks/results/",
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
